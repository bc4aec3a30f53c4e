// cors-anywhere as its README starts it, on loopback: the CORS proxy users pick instead of the bridge.
// Usage: node cors_anywhere.js PORT
const corsProxy = require("cors-anywhere");

const port = Number(process.argv[2] || 8090);
corsProxy.createServer({
  originWhitelist: [],           // any origin, as in the README's example
  removeHeaders: ["cookie", "cookie2"],
}).listen(port, "127.0.0.1", () => {
  console.log(`cors-anywhere ${require("cors-anywhere/package.json").version} on 127.0.0.1:${port}`);
});
