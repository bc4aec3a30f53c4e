/*!
 * legacy-client.js: call a jsonp-cors-bridge from any browser, down to IE6, with one API.
 *
 * Transports, in the order 'auto' tries them:
 *   'cors'  XMLHttpRequest level 2 to /cors/NAME/PATH: any configured method, headers and body.
 *   'xdr'   XDomainRequest (IE8/9) to /cors/NAME/PATH: GET and POST, text/plain bodies, no headers,
 *           same scheme as the page. It cannot see an HTTP error status, so a failed GET is asked
 *           again over JSONP to learn it.
 *   'jsonp' a <script> tag to /jsonp/NAME/PATH?callback=FN&envelope=1: GET only. The bridge's envelope
 *           carries status, headers and data, so the caller sees the same {status, headers, data}.
 *
 * Written in ES3 (checked by check-es3.js with acorn): no trailing commas, no reserved words as
 * property names, no getters, no let/const, and ES5 built-ins (JSON, Promise) only after a check.
 * It deliberately keeps no cache, retries nothing (except the one XDR-to-JSONP status lookup) and
 * sends no credentials: the bridge does the caching and never needs cookies.
 */
(function (global) {
  var VERSION = '1.0.0';
  var DEFAULT_TIMEOUT = 10000;
  var TRANSPORTS = { auto: 1, cors: 1, xdr: 1, jsonp: 1 };
  // Query parameters the bridge's JSONP path keeps for itself (besides the callback parameter).
  var JSONP_CONTROL_PARAMS = { envelope: 1, _: 1 };
  var objectProto = Object.prototype;
  var callbackSeq = 0;

  function hasOwn(object, key) {
    return objectProto.hasOwnProperty.call(object, key);
  }

  function isArray(value) {
    return objectProto.toString.call(value) === '[object Array]';
  }

  function noop() {}

  function trim(text) {
    return String(text).replace(/^\s+|\s+$/g, '');
  }

  function defer(fn) {
    global.setTimeout(fn, 0);
  }

  // --- JSON: the native one when there is one, else a strict RFC 8259 reader (no eval) ---

  var JSON_ESCAPES = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
  var NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+\-]?[0-9]+)?/;
  var HEX4 = /^[0-9a-fA-F]{4}$/;

  function readJson(text) {
    var at = 0;
    var length = text.length;

    function fail(what) {
      throw new SyntaxError('invalid JSON: ' + what + ' at character ' + at);
    }
    function skipSpace() {
      var c = text.charAt(at);
      while (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
        at += 1;
        c = text.charAt(at);
      }
    }
    function readString() {
      var out = '';
      var start;
      var c;
      var hex;
      at += 1;
      for (;;) {
        start = at;
        c = text.charAt(at);
        while (at < length && c !== '"' && c !== '\\') {
          if (c < ' ') {
            fail('control character in a string');
          }
          at += 1;
          c = text.charAt(at);
        }
        out += text.substring(start, at);
        if (at >= length) {
          fail('unterminated string');
        }
        if (c === '"') {
          at += 1;
          return out;
        }
        c = text.charAt(at + 1);
        if (c === 'u') {
          hex = text.substring(at + 2, at + 6);
          if (!HEX4.test(hex)) {
            fail('bad \\u escape');
          }
          out += String.fromCharCode(parseInt(hex, 16));
          at += 6;
        } else if (hasOwn(JSON_ESCAPES, c)) {
          out += JSON_ESCAPES[c];
          at += 2;
        } else {
          fail('bad escape');
        }
      }
    }
    function readNumber() {
      var match = NUMBER.exec(text.substring(at));
      if (!match) {
        fail('bad number');
      }
      at += match[0].length;
      return +match[0];
    }
    function readArray() {
      var result = [];
      at += 1;
      skipSpace();
      if (text.charAt(at) === ']') {
        at += 1;
        return result;
      }
      for (;;) {
        result[result.length] = readValue();
        skipSpace();
        if (text.charAt(at) === ']') {
          at += 1;
          return result;
        }
        if (text.charAt(at) !== ',') {
          fail("expected ',' or ']'");
        }
        at += 1;
      }
    }
    function readObject() {
      var result = {};
      var key;
      at += 1;
      skipSpace();
      if (text.charAt(at) === '}') {
        at += 1;
        return result;
      }
      for (;;) {
        skipSpace();
        if (text.charAt(at) !== '"') {
          fail('expected a string key');
        }
        key = readString();
        skipSpace();
        if (text.charAt(at) !== ':') {
          fail("expected ':'");
        }
        at += 1;
        result[key] = readValue();
        skipSpace();
        if (text.charAt(at) === '}') {
          at += 1;
          return result;
        }
        if (text.charAt(at) !== ',') {
          fail("expected ',' or '}'");
        }
        at += 1;
      }
    }
    function readValue() {
      var c;
      skipSpace();
      c = text.charAt(at);
      if (c === '{') {
        return readObject();
      }
      if (c === '[') {
        return readArray();
      }
      if (c === '"') {
        return readString();
      }
      if (c === '-' || (c >= '0' && c <= '9')) {
        return readNumber();
      }
      if (text.substring(at, at + 4) === 'true') {
        at += 4;
        return true;
      }
      if (text.substring(at, at + 5) === 'false') {
        at += 5;
        return false;
      }
      if (text.substring(at, at + 4) === 'null') {
        at += 4;
        return null;
      }
      return fail(c ? "unexpected '" + c + "'" : 'unexpected end');
    }

    var value = readValue();
    skipSpace();
    if (at < length) {
      fail('text after the value');
    }
    return value;
  }

  function quoteJson(text) {
    return '"' + text.replace(/[\\"\u0000-\u001f\u2028\u2029]/g, function (c) {
      var code;
      if (c === '"' || c === '\\') {
        return '\\' + c;
      }
      code = c.charCodeAt(0).toString(16);
      return '\\u' + '0000'.substring(code.length) + code;
    }) + '"';
  }

  function writeJson(value) {
    var parts = [];
    var key;
    var i;
    var item;
    var type = typeof value;
    if (value === null || type === 'undefined' || type === 'function') {
      return 'null';
    }
    if (type === 'string') {
      return quoteJson(value);
    }
    if (type === 'number') {
      return isFinite(value) ? String(value) : 'null';
    }
    if (type === 'boolean') {
      return value ? 'true' : 'false';
    }
    if (typeof value.toJSON === 'function') {
      return writeJson(value.toJSON());
    }
    if (isArray(value)) {
      for (i = 0; i < value.length; i += 1) {
        parts[parts.length] = writeJson(value[i]);
      }
      return '[' + parts.join(',') + ']';
    }
    for (key in value) {
      if (hasOwn(value, key)) {
        item = value[key];
        if (typeof item !== 'undefined' && typeof item !== 'function') {
          parts[parts.length] = quoteJson(key) + ':' + writeJson(item);
        }
      }
    }
    return '{' + parts.join(',') + '}';
  }

  function nativeJson() {
    var json = global.JSON;
    return json && typeof json.parse === 'function' && typeof json.stringify === 'function' ? json : null;
  }

  function parseJson(text) {
    var json = nativeJson();
    return json ? json.parse(text) : readJson(text);
  }

  function stringifyJson(value) {
    var json = nativeJson();
    return json ? json.stringify(value) : writeJson(value);
  }

  // --- what this browser can do ---

  function corsSupported() {
    var Xhr = global.XMLHttpRequest;
    if (!Xhr) {
      return false;
    }
    try {
      return 'withCredentials' in new Xhr();
    } catch (e) {
      return false;
    }
  }

  function xdrSupported() {
    return !!global.XDomainRequest;
  }

  function schemeOf(url) {
    var match = /^([a-zA-Z][a-zA-Z0-9+.\-]*:)/.exec(url);
    return match ? match[1].toLowerCase() : null;
  }

  function pageScheme() {
    var location = global.location;
    return location && location.protocol ? String(location.protocol).toLowerCase() : null;
  }

  // --- errors and answers ---

  function makeError(type, message, transport, res) {
    var error = new Error(message);
    error.type = type;
    error.status = res ? res.status : 0;
    error.transport = transport;
    error.headers = res ? res.headers : {};
    error.data = res ? res.data : null;
    return error;
  }

  function httpMessage(status, data) {
    var text = 'HTTP ' + status;
    if (data && typeof data === 'object' && typeof data.message === 'string') {
      text += ': ' + data.message;
    }
    return text;
  }

  // --- building requests ---

  function encodePath(path) {
    var segments;
    var i;
    path = path === null || typeof path === 'undefined' ? '' : String(path);
    if (path.charAt(0) === '/') {
      path = path.substring(1);
    }
    segments = path.split('/');
    for (i = 0; i < segments.length; i += 1) {
      segments[i] = encodeURIComponent(segments[i]);
    }
    return segments.join('/');
  }

  function queryPairs(params) {
    var pairs = [];
    var key;
    var values;
    var i;
    if (!params) {
      return pairs;
    }
    for (key in params) {
      if (hasOwn(params, key)) {
        values = isArray(params[key]) ? params[key] : [params[key]];
        for (i = 0; i < values.length; i += 1) {
          if (values[i] !== null && typeof values[i] !== 'undefined') {
            pairs[pairs.length] = [key, String(values[i])];
          }
        }
      }
    }
    return pairs;
  }

  function encodeQuery(pairs) {
    var parts = [];
    var i;
    for (i = 0; i < pairs.length; i += 1) {
      parts[parts.length] = encodeURIComponent(pairs[i][0]) + '=' + encodeURIComponent(pairs[i][1]);
    }
    return parts.join('&');
  }

  function headerCount(headers) {
    var count = 0;
    var name;
    for (name in headers) {
      if (hasOwn(headers, name)) {
        count += 1;
      }
    }
    return count;
  }

  function hasHeader(headers, wanted) {
    var name;
    for (name in headers) {
      if (hasOwn(headers, name) && name.toLowerCase() === wanted) {
        return true;
      }
    }
    return false;
  }

  function prepare(client, options) {
    var method = String(options.method || 'GET').toUpperCase();
    var transport = options.transport || client.transport;
    var timeout = typeof options.timeout === 'number' ? options.timeout : client.timeout;
    if (!options.api) {
      throw new TypeError('LegacyBridge: request needs an api name');
    }
    if (!hasOwn(TRANSPORTS, transport)) {
      throw new TypeError("LegacyBridge: transport must be 'auto', 'cors', 'xdr' or 'jsonp', not '" +
                          transport + "'");
    }
    return {
      method: method,
      api: String(options.api),
      path: encodePath(options.path),
      pairs: queryPairs(options.params),
      headers: options.headers || {},
      body: options.body,
      transport: transport,
      timeout: timeout
    };
  }

  function urlFor(client, kind, req, extraPairs) {
    var pairs = req.pairs.concat(extraPairs || []);
    var query = encodeQuery(pairs);
    return client.base + '/' + kind + '/' + encodeURIComponent(req.api) + '/' + req.path +
      (query ? '?' + query : '');
  }

  // Why a transport cannot carry this request, or null when it can. Checked before any network use.
  function refusal(client, transport, req) {
    var i;
    if (transport === 'cors') {
      return corsSupported() ? null :
        "this browser has no CORS-capable XMLHttpRequest; use transport 'auto'";
    }
    if (transport === 'xdr') {
      if (!xdrSupported()) {
        return "this browser has no XDomainRequest; use transport 'auto'";
      }
      if (req.method !== 'GET' && req.method !== 'POST') {
        return 'XDomainRequest sends only GET and POST, not ' + req.method;
      }
      if (headerCount(req.headers)) {
        return 'XDomainRequest cannot send request headers';
      }
      if (schemeOf(client.base) && pageScheme() && schemeOf(client.base) !== pageScheme()) {
        return 'XDomainRequest only reaches the scheme of the page (' + pageScheme() + ')';
      }
      return null;
    }
    // jsonp
    if (req.method !== 'GET') {
      return 'JSONP can only GET, not ' + req.method + '; this needs CORS (or XDomainRequest for POST)';
    }
    if (headerCount(req.headers)) {
      return 'JSONP cannot send request headers';
    }
    if (typeof req.body !== 'undefined' && req.body !== null) {
      return 'JSONP cannot send a body';
    }
    for (i = 0; i < req.pairs.length; i += 1) {
      if (req.pairs[i][0] === client.callbackParam || hasOwn(JSONP_CONTROL_PARAMS, req.pairs[i][0])) {
        return "the parameter '" + req.pairs[i][0] + "' is reserved by the bridge's JSONP path";
      }
    }
    return null;
  }

  // 'auto': the first transport that can carry the request, in the order cors, xdr, jsonp.
  function choose(client, req) {
    if (corsSupported()) {
      return 'cors';
    }
    if (refusal(client, 'xdr', req) === null) {
      return 'xdr';
    }
    return 'jsonp';
  }

  function bodyText(req) {
    if (typeof req.body === 'undefined' || req.body === null) {
      return null;
    }
    return typeof req.body === 'string' ? req.body : stringifyJson(req.body);
  }

  // --- the transports: each sends, reports one outcome, and returns its abort function ---
  // An outcome is {status, headers, text} (text still to parse), {status, headers, data} (parsed),
  // or {failure: type, message}.

  function parseHeaderBlock(raw) {
    var headers = {};
    var lines = String(raw || '').split('\n');
    var i;
    var colon;
    var name;
    var value;
    for (i = 0; i < lines.length; i += 1) {
      colon = lines[i].indexOf(':');
      if (colon > 0) {
        name = trim(lines[i].substring(0, colon)).toLowerCase();
        value = trim(lines[i].substring(colon + 1));
        headers[name] = hasOwn(headers, name) ? headers[name] + ', ' + value : value;
      }
    }
    return headers;
  }

  function sendCors(client, req, report) {
    var xhr = new global.XMLHttpRequest();
    var body = bodyText(req);
    var name;
    xhr.open(req.method, urlFor(client, 'cors', req), true);
    for (name in req.headers) {
      if (hasOwn(req.headers, name)) {
        xhr.setRequestHeader(name, String(req.headers[name]));
      }
    }
    if (body !== null && !hasHeader(req.headers, 'content-type')) {
      xhr.setRequestHeader('Content-Type', typeof req.body === 'string' ? 'text/plain;charset=UTF-8'
                                                                         : 'application/json');
    }
    xhr.onreadystatechange = function () {
      var status;
      if (xhr.readyState !== 4) {
        return;
      }
      // IE throws when a handler is set to null, and keeps the closure alive otherwise.
      xhr.onreadystatechange = noop;
      status = xhr.status === 1223 ? 204 : xhr.status; // IE reports 204 as 1223
      if (!status) {
        report({ failure: 'network', message: 'the request to the bridge failed (network error, ' +
                 'or the bridge refused this origin)' });
        return;
      }
      report({ status: status, headers: parseHeaderBlock(xhr.getAllResponseHeaders()),
               text: xhr.responseText });
    };
    xhr.send(body);
    return function () {
      xhr.onreadystatechange = noop;
      try {
        xhr.abort();
      } catch (e) {
        // an XHR that already finished may refuse to abort; there is nothing left to stop
      }
    };
  }

  function sendXdr(client, req, report) {
    var xdr = new global.XDomainRequest();
    var body = bodyText(req);
    var aborted = false;
    xdr.onload = function () {
      var headers = {};
      if (xdr.contentType) {
        headers['content-type'] = xdr.contentType;
      }
      // XDomainRequest only loads 2xx answers and never tells which one: report it as 200.
      report({ status: 200, headers: headers, text: xdr.responseText });
    };
    xdr.onerror = function () {
      report({ failure: 'network', message: 'XDomainRequest failed: a network error or an HTTP ' +
               'error status, which XDomainRequest cannot tell apart' });
    };
    xdr.ontimeout = xdr.onerror;
    xdr.onprogress = noop; // IE9 aborts requests that have no progress handler
    xdr.open(req.method, urlFor(client, 'cors', req));
    // IE9 may drop a request sent in the same tick as open() when several are in flight.
    defer(function () {
      if (!aborted) {
        xdr.send(body === null ? '' : body);
      }
    });
    return function () {
      aborted = true;
      xdr.onload = xdr.onerror = xdr.ontimeout = noop;
      try {
        xdr.abort();
      } catch (e) {
        // not sent yet, or already done
      }
    };
  }

  function uniqueCallbackName() {
    var name;
    do {
      callbackSeq += 1;
      // Letters, digits and '_': passes the bridge's callback grammar and reaches nothing else.
      name = 'LegacyBridge_cb' + callbackSeq + '_' + Math.floor(Math.random() * 2176782336).toString(36);
    } while (typeof global[name] !== 'undefined');
    return name;
  }

  function removeGlobal(name) {
    try {
      delete global[name];
    } catch (e) {
      global[name] = undefined; // IE6-8 refuse to delete properties of window
    }
  }

  function removeScript(script) {
    if (script.parentNode) {
      script.parentNode.removeChild(script);
    }
  }

  function sendJsonp(client, req, report) {
    var document = global.document;
    var head = document.getElementsByTagName('head')[0] || document.documentElement;
    var script = document.createElement('script');
    var name = uniqueCallbackName();
    var settled = false;

    function settle(outcome) {
      if (settled) {
        return;
      }
      settled = true;
      script.onload = script.onerror = script.onreadystatechange = noop;
      removeScript(script);
      removeGlobal(name);
      report(outcome);
    }

    global[name] = function (envelope) {
      if (!envelope || typeof envelope !== 'object' || typeof envelope.status !== 'number') {
        settle({ failure: 'parse', message: 'the JSONP answer is not a bridge envelope' });
        return;
      }
      settle({ status: envelope.status, headers: envelope.headers || {}, data: envelope.data });
    };
    // onload for modern engines, onreadystatechange for IE6-8; either way after the script ran.
    script.onload = script.onreadystatechange = function () {
      var state = script.readyState;
      if (!state || state === 'loaded' || state === 'complete') {
        defer(function () {
          settle({ failure: 'parse', message: 'the script loaded but did not call back: not a ' +
                   'bridge JSONP answer' });
        });
      }
    };
    script.onerror = function () {
      settle({ failure: 'network', message: 'the JSONP script failed to load (network error, or ' +
               'the bridge refused it)' });
    };
    script.async = true;
    script.src = urlFor(client, 'jsonp', req, [[client.callbackParam, name], ['envelope', '1']]);
    // Before the first child: IE6 misplaces scripts appended after a <base> element.
    head.insertBefore(script, head.firstChild);

    return function () {
      // Timed out. The script cannot be recalled once requested, and a late one still runs: leave a
      // no-op under the name until it has run or failed, so a late answer never throws.
      settled = true;
      removeScript(script);
      function bury() {
        script.onload = script.onerror = script.onreadystatechange = noop;
        removeGlobal(name);
      }
      global[name] = bury;
      script.onerror = bury;
      script.onload = script.onreadystatechange = function () {
        var state = script.readyState;
        if (!state || state === 'loaded' || state === 'complete') {
          bury();
        }
      };
    };
  }

  var SENDERS = { cors: sendCors, xdr: sendXdr, jsonp: sendJsonp };

  // --- one request, start to finish ---

  function send(client, options, callback) {
    var req = prepare(client, options || {});
    var transport = req.transport === 'auto' ? choose(client, req) : req.transport;
    var finished = false;
    var timer = null;
    var abort = null;
    var why = refusal(client, transport, req);

    function finish(error, res) {
      if (finished) {
        return;
      }
      finished = true;
      if (timer !== null) {
        global.clearTimeout(timer);
      }
      callback(error, res);
    }

    function answer(used, outcome) {
      var data = outcome.data;
      var res;
      if (outcome.failure) {
        finish(makeError(outcome.failure, outcome.message, used, null));
        return;
      }
      if (hasOwn(outcome, 'text')) {
        try {
          data = trim(outcome.text) === '' ? null : parseJson(outcome.text);
        } catch (e) {
          res = { status: outcome.status, headers: outcome.headers, data: null, transport: used };
          finish(makeError('parse', 'the answer is not JSON: ' + e.message, used, res), res);
          return;
        }
      }
      res = { status: outcome.status, headers: outcome.headers, data: data, transport: used };
      if (res.status < 200 || res.status >= 300) {
        finish(makeError('http', httpMessage(res.status, data), used, res), res);
        return;
      }
      finish(null, res);
    }

    function run(used) {
      abort = SENDERS[used](client, req, function (outcome) {
        if (finished) {
          return;
        }
        // XDomainRequest hides error statuses; a GET can ask again over JSONP, which shows them.
        if (used === 'xdr' && outcome.failure && refusal(client, 'jsonp', req) === null) {
          run('jsonp');
          return;
        }
        answer(used, outcome);
      });
    }

    if (why !== null) {
      // Asynchronous like every other answer, and before any request is made.
      defer(function () {
        finish(makeError('method', why, transport, null));
      });
      return;
    }
    if (req.timeout > 0) {
      timer = global.setTimeout(function () {
        timer = null;
        if (!finished && abort) {
          abort();
        }
        finish(makeError('timeout', 'no answer within ' + req.timeout + ' ms', transport, null));
      }, req.timeout);
    }
    run(transport);
  }

  // --- the public API ---

  function Client(settings) {
    var base = String(settings.base || '');
    this.base = base.replace(/\/+$/, '');
    this.timeout = typeof settings.timeout === 'number' ? settings.timeout : DEFAULT_TIMEOUT;
    this.transport = settings.transport || 'auto';
    this.callbackParam = settings.callbackParam || 'callback';
    if (!hasOwn(TRANSPORTS, this.transport)) {
      throw new TypeError("LegacyBridge: transport must be 'auto', 'cors', 'xdr' or 'jsonp'");
    }
  }

  // request(options, callback): callback(err, res). Without a callback, a Promise where there is one.
  Client.prototype.request = function (options, callback) {
    var client = this;
    var PromiseType = global.Promise;
    if (typeof callback === 'function') {
      send(client, options, callback);
      return undefined;
    }
    if (typeof PromiseType !== 'function') {
      throw new TypeError('LegacyBridge: pass a callback; this browser has no Promise');
    }
    return new PromiseType(function (resolve, reject) {
      send(client, options, function (error, res) {
        if (error) {
          reject(error);
        } else {
          resolve(res);
        }
      });
    });
  };

  // get(api, path, [params], [callback])
  Client.prototype.get = function (api, path, params, callback) {
    if (typeof params === 'function') {
      callback = params;
      params = null;
    }
    return this.request({ api: api, path: path, params: params }, callback);
  };

  // The transport 'auto' picks in this browser for a plain GET.
  Client.prototype.detect = function () {
    return choose(this, prepare(this, { api: 'x' }));
  };

  global.LegacyBridge = {
    version: VERSION,
    create: function (settings) {
      return new Client(settings || {});
    },
    // The ES3 JSON reader and writer used when the browser has no window.JSON (exposed for tests).
    fallbackJson: { parse: readJson, stringify: writeJson }
  };
}(this));
