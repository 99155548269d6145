'use strict'
// Preloaded into the js-ipfs test daemons with NODE_OPTIONS="--require .../nodelay.cjs".
//
// libp2p's TCP transport in js-ipfs 0.66 never sets TCP_NODELAY, so Nagle's algorithm plus delayed
// ACKs add ~40-200 ms to every small request/response: one block fetched from another node takes
// ~264 ms instead of 12-20 ms, and pubsub gets similarly slow. This preload turns Nagle off on every
// TCP socket the process opens or accepts. It changes latency only, never what is sent.
const net = require('net')

const connect = net.Socket.prototype.connect
net.Socket.prototype.connect = function (...args) {
  // Node remembers the setting on a not-yet-connected socket and applies it once connected.
  this.setNoDelay(true)
  return connect.apply(this, args)
}

const emit = net.Server.prototype.emit
net.Server.prototype.emit = function (event, socket, ...rest) {
  if (event === 'connection' && socket && typeof socket.setNoDelay === 'function') {
    socket.setNoDelay(true)
  }
  return emit.call(this, event, socket, ...rest)
}
