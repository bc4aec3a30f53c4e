// Preloaded into the suite's test server (node --require): its server.listen(port) binds every
// interface, and nothing of a benchmark run should be reachable from off this machine. A listen
// given a port alone (a number, or digits as npm hands it over) is given 127.0.0.1 as its host.
'use strict'
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const portOnly = typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))
  if (portOnly && (args.length === 1 || typeof args[1] === 'function')) args.splice(1, 0, '127.0.0.1')
  return listen.apply(this, args)
}
