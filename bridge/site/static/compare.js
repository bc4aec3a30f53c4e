/*
 * The comparison page: one request, run at once over CORS (fetch to /cors/) and JSONP (a script tag,
 * through legacy-client.js), shown side by side with the bridge's /explain verdict.
 *
 * Everything the server knows arrives as JSON in #page-data (rendered with |tojson); every value shown
 * is set with textContent, never parsed as HTML. Plain modern JavaScript, no build step, no network
 * use beyond the bridge.
 */
(function () {
  'use strict';

  var DATA = JSON.parse(document.getElementById('page-data').textContent);
  var CORS_TIMEOUT_MS = 20000;
  var JSONP_TIMEOUT_MS = 20000;
  var byId = function (id) { return document.getElementById(id); };
  var form = byId('request-form');
  var jsonpClient = window.LegacyBridge
    ? window.LegacyBridge.create({ base: DATA.bridge, timeout: JSONP_TIMEOUT_MS, transport: 'jsonp' })
    : null;

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (key) {
      if (key === 'text') { node.textContent = props[key]; } else { node.setAttribute(key, props[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  // --- the form ---

  function readForm() {
    var headers = byId('f-headers').value.split('\n').map(function (line) {
      var at = line.indexOf(':');
      return at < 0 ? [line.trim(), ''] : [line.slice(0, at).trim(), line.slice(at + 1).trim()];
    }).filter(function (pair) { return pair[0]; });
    return {
      api: byId('f-api').value,
      method: byId('f-method').value,
      path: byId('f-path').value.replace(/^\/+/, ''),
      query: byId('f-query').value.replace(/^\?/, ''),
      credentials: byId('f-credentials').value,
      headers: headers,
      body: byId('f-body').value
    };
  }

  function fillForm(scenario) {
    byId('f-api').value = scenario.api;
    byId('f-method').value = scenario.method;
    byId('f-path').value = scenario.path;
    byId('f-query').value = scenario.query;
    byId('f-credentials').value = scenario.credentials;
    byId('f-headers').value = scenario.headers.map(function (h) { return h[0] + ': ' + h[1]; }).join('\n');
    byId('f-body').value = scenario.body;
  }

  function queryParams(query) {
    var params = {};
    new URLSearchParams(query).forEach(function (value, key) { params[key] = value; });
    return params;
  }

  function headerObject(pairs) {
    var object = {};
    pairs.forEach(function (pair) { object[pair[0]] = pair[1]; });
    return object;
  }

  // --- the three runs: each resolves to a plain result, never rejects ---

  function runCors(req) {
    var url = DATA.bridge + '/cors/' + encodeURIComponent(req.api) + '/' + req.path +
      (req.query ? '?' + req.query : '');
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, CORS_TIMEOUT_MS);
    var init = { method: req.method, headers: headerObject(req.headers), credentials: req.credentials,
                 signal: controller.signal, cache: 'no-store' };
    if (req.body && req.method !== 'GET' && req.method !== 'HEAD') { init.body = req.body; }
    var started = performance.now();
    return fetch(url, init).then(function (response) {
      return response.text().then(function (text) {
        var headers = [];
        response.headers.forEach(function (value, name) { headers.push([name, value]); });
        return {
          outcome: response.ok ? 'ok' : 'http-error',
          status: response.status,
          headers: headers,
          cache: response.headers.get('cache-status'),
          error: response.ok ? 'no error' : 'a readable status ' + response.status + ' and its body',
          body: text,
          ms: performance.now() - started
        };
      });
    }, function (error) {
      var timedOut = error.name === 'AbortError';
      return {
        outcome: timedOut ? 'timeout' : 'blocked',
        status: null,
        headers: [],
        cache: null,
        error: error.name + ': ' + error.message + (timedOut ? ' (the page gave up)'
          : ' (the page cannot tell a CORS refusal from a network failure, nor see the status)'),
        body: '',
        ms: performance.now() - started
      };
    }).finally(function () { clearTimeout(timer); });
  }

  function runJsonp(req) {
    var started = performance.now();
    return new Promise(function (resolve) {
      if (!jsonpClient) {
        resolve({ outcome: 'blocked', status: null, headers: [], cache: null, body: '', ms: 0,
                  error: 'legacy-client.js did not load from the bridge' });
        return;
      }
      jsonpClient.request({ api: req.api, path: req.path, method: req.method,
                            params: queryParams(req.query), headers: headerObject(req.headers),
                            transport: 'jsonp' }, function (err, res) {
        var ms = performance.now() - started;
        var answer = res || (err && err.status ? { status: err.status, headers: err.headers,
                                                   data: err.data } : null);
        var headers = answer ? Object.keys(answer.headers || {}).map(function (k) {
          return [k, answer.headers[k]];
        }) : [];
        var result = {
          outcome: 'ok', status: answer ? answer.status : null, headers: headers,
          cache: answer && answer.headers ? answer.headers['cache-status'] || null : null,
          body: answer ? JSON.stringify(answer.data, null, 2) : '', ms: ms, error: 'no error',
          requested: err && err.type === 'method' ? false : true
        };
        if (err) {
          result.outcome = { method: 'refused', http: 'http-error', timeout: 'timeout' }[err.type] || 'blocked';
          result.error = {
            method: 'refused before any request: ' + err.message,
            http: 'status ' + err.status + ' inside the envelope (the script itself loaded with 200)',
            timeout: 'no callback within ' + JSONP_TIMEOUT_MS + ' ms: a script tag has no status',
            network: 'script onerror: no status, no body'
          }[err.type] || err.type + ': ' + err.message;
        }
        resolve(result);
      });
    });
  }

  function runExplain(req) {
    var contentType = null;
    var headers = [];
    req.headers.forEach(function (pair) {
      if (pair[0].toLowerCase() === 'content-type') { contentType = pair[1]; } else {
        headers.push(pair[1] ? pair[0] + ': ' + pair[1] : pair[0]);
      }
    });
    var params = new URLSearchParams({ api: req.api, origin: location.origin, method: req.method,
                                       credentials: req.credentials, headers: headers.join(','),
                                       path: req.path + (req.query ? '?' + req.query : '') });
    if (contentType !== null) { params.set('content_type', contentType); }
    return fetch(DATA.bridge + '/explain?' + params.toString(), { cache: 'no-store' })
      .then(function (response) { return response.json(); })
      .catch(function (error) { return { error: 'unreachable', message: String(error) }; });
  }

  // --- showing the results ---

  var OUTCOME = {
    ok: ['ok', 'works'], 'http-error': ['warn', 'an error status, readable'],
    blocked: ['bad', 'failed'], refused: ['bad', 'refused'], timeout: ['bad', 'timed out']
  };

  function badge(outcome) {
    var style = OUTCOME[outcome] || ['bad', outcome];
    return el('span', { 'class': 'badge ' + style[0], text: style[1] });
  }

  function row(dl, name, valueNode, key) {
    dl.appendChild(el('dt', { text: name }));
    var dd = el('dd', { 'data-row': key }, [valueNode]);
    dl.appendChild(dd);
  }

  function text(value) { return document.createTextNode(value); }

  function headerList(headers, note) {
    if (!headers.length) { return text(note); }
    var list = el('ul', { 'class': 'headers' });
    headers.forEach(function (h) { list.appendChild(el('li', { 'class': 'mono', text: h[0] + ': ' + h[1] })); });
    return list;
  }

  function corsRequests(explain) {
    if (!explain || !explain.requests) { return text('(unknown: /explain did not answer)'); }
    return text(explain.requests.map(function (r) {
      return r.preflight ? 'OPTIONS (preflight)' : r.method;
    }).join(' → ') + (explain.preflight && explain.requests.length === 1
      ? ' — the preflight failed, so the request itself was never sent' : ''));
  }

  function showSide(id, result, requests) {
    var dl = document.querySelector('#' + id + ' dl');
    dl.textContent = '';
    document.getElementById(id).setAttribute('data-outcome', result.outcome);
    row(dl, 'Outcome', badge(result.outcome), 'outcome');
    row(dl, 'Status seen', text(result.status === null ? 'none: hidden from the page' : String(result.status)),
        'status');
    row(dl, 'Headers read', headerList(result.headers, id === 'cors' ? 'none readable'
      : 'none (a script tag exposes no headers)'), 'headers');
    row(dl, 'Requests', requests, 'requests');
    row(dl, 'Time', text(Math.round(result.ms) + ' ms'), 'time');
    row(dl, 'Cache', text(result.cache || 'not visible'), 'cache');
    row(dl, 'Errors show as', text(result.error), 'error');
    if (result.body) { row(dl, 'Body', el('pre', { text: result.body.slice(0, 2000) }), 'body'); }
  }

  function showExplain(explain) {
    var summary = byId('explain-summary');
    var errorLine = byId('explain-error');
    var steps = byId('explain-steps');
    steps.textContent = '';
    if (explain.error) {
      summary.textContent = '/explain refused: ' + explain.message;
      errorLine.hidden = true;
      return;
    }
    summary.textContent = (explain.allowed ? 'CORS: allowed' : 'CORS: blocked by the browser') +
      (explain.preflight ? ', after a preflight' : ', no preflight') +
      '. JSONP: ' + (explain.jsonp.allowed ? 'served' : 'refused') + ' — ' + explain.jsonp.reason + '.';
    var own = explain.engines && explain.engines[explain.browser];
    byId('explain-engine').textContent = own ? 'Your browser: ' + own.title +
      ' (its words below; /explain read them from your User-Agent).' : '';
    errorLine.hidden = !explain.console;
    errorLine.textContent = explain.console ? 'Console (' + (own ? own.title : explain.browser) + '): ' +
      explain.console + (explain.page_error ? '\nThe page\'s code catches: ' + explain.page_error : '') : '';
    showOthers(explain);
    explain.steps.forEach(function (step) {
      var mark = step.ok === true ? '✓' : step.ok === false ? '✗' : '→';
      var item = el('li', { 'class': step.ok === false ? 'mark-bad' : 'mark-ok' }, [
        el('span', { 'class': 'actor', text: mark + ' ' + step.actor }),
        text(' ' + step.check),
        el('span', { 'class': 'detail', text: step.detail })
      ]);
      steps.appendChild(item);
    });
  }

  function showOthers(explain) {
    var table = byId('explain-others');
    var body = table.querySelector('tbody');
    body.textContent = '';
    var names = Object.keys(explain.engines || {}).filter(function (name) { return name !== explain.browser; });
    table.hidden = explain.allowed || names.length === 0;
    names.forEach(function (name) {
      var view = explain.engines[name];
      body.appendChild(el('tr', { 'data-engine': name }, [
        el('th', { text: view.title }),
        el('td', { text: view.page_error || '(nothing: the page reads the answer)' }),
        el('td', { 'class': 'console-lines', text: view.console.join('\n') })
      ]));
    });
  }

  function run() {
    var req = readForm();
    var button = byId('run');
    button.disabled = true;
    document.body.setAttribute('data-state', 'running');
    Promise.all([runCors(req), runJsonp(req), runExplain(req)]).then(function (results) {
      var explain = results[2];
      showSide('cors', results[0], corsRequests(explain));
      showSide('jsonp', results[1], text(results[1].requested === false
        ? 'none: refused before any request'
        : 'GET <script src=/jsonp/' + req.api + '/…&envelope=1> (no preflight: scripts are not subject to CORS)'));
      showExplain(explain);
    }).finally(function () {
      button.disabled = false;
      document.body.setAttribute('data-state', 'done');
    });
  }

  // --- start-up ---

  function selectScenario(scenario, button) {
    document.querySelectorAll('#scenario-list button').forEach(function (b) {
      b.setAttribute('aria-pressed', String(b === button));
    });
    byId('scenario-lesson').textContent = scenario.lesson;
    fillForm(scenario);
    run();
  }

  byId('page-origin').textContent = location.origin;
  DATA.apis.forEach(function (api) {
    byId('f-api').appendChild(el('option', { value: api.name, text: api.name + ' (' + api.methods.join(' ') + ')' }));
  });
  DATA.scenarios.forEach(function (scenario) {
    var button = el('button', { type: 'button', 'data-scenario': scenario.id, 'aria-pressed': 'false',
                                text: scenario.title });
    button.addEventListener('click', function () { selectScenario(scenario, button); });
    byId('scenario-list').appendChild(button);
  });
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    document.querySelectorAll('#scenario-list button').forEach(function (b) {
      b.setAttribute('aria-pressed', 'false');
    });
    byId('scenario-lesson').textContent = '';
    run();
  });
  if (DATA.scenarios.length) { fillForm(DATA.scenarios[0]); }
  document.body.setAttribute('data-state', 'ready');
}());
