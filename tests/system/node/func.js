// A function written with Fn's Node FDK (@fnproject/fdk), as a Node user of Fn writes one.
const fdk = require('@fnproject/fdk')

let served = 0 // calls this container has served: a hot container counts on

fdk.handle(function (input, ctx) {
  served += 1
  if (input === 'throw') {
    throw new Error('the function failed on purpose')
  }
  if (input === 'sleep') {
    return new Promise((resolve) => setTimeout(() => resolve('too late'), 10000))
  }
  const gateway = ctx.httpGateway
  if (input === 'created') {
    gateway.statusCode = 201
    gateway.setResponseHeader('X-Made-By', 'fdk-node')
  }
  return {
    input: input,
    served: served,
    app: ctx.appID,
    fn: ctx.fnID,
    callId: ctx.callID,
    method: gateway.method,
    url: gateway.requestURL,
    mine: gateway.getHeader('X-Mine')
  }
}, { inputMode: 'string' })
