#!/usr/bin/env node
// Checks that a script would parse and run in an ES3 engine (IE6-8 era), as far as a parser can tell.
//
// Usage: node check-es3.js FILE   (or "-" to read standard input)
// Exit 0 and print "ok" when clean; exit 1 and print one "FILE:LINE:COL: message" per problem.
//
// Three layers, because acorn's ES3 mode alone is not enough:
// 1. acorn with ecmaVersion 3 and allowReserved "never": no let/const, getters, trailing commas in
//    objects or calls, and no reserved word as a property name (`.catch`, `{default: 1}`), which old
//    JScript refuses although ES5 allows it.
// 2. Tokens: a trailing comma in an array literal parses in ES3, but IE<9 counts an extra element.
// 3. The tree: ES5+ built-ins that IE6-8 lack may only be reached through a guarded global
//    (`global.JSON`, `global.Promise`), never by their bare names or as well-known ES5 methods.
// It deliberately does not run the code: the browser tests do that.
'use strict';

var fs = require('fs');
var acorn = require('acorn');

// Array/Object/Function/String/Date methods added by ES5 (or later) that IE6-8 do not have.
var ES5_MEMBERS = {
  forEach: 1, map: 1, filter: 1, reduce: 1, reduceRight: 1, some: 1, every: 1, lastIndexOf: 1,
  keys: 1, create: 1, defineProperty: 1, defineProperties: 1, getPrototypeOf: 1, freeze: 1,
  isArray: 1, bind: 1, trim: 1, now: 1, toISOString: 1, assign: 1, includes: 1
};
// Globals an ES3 engine may not have: reach them as properties of the global object after a check.
var GUARDED_GLOBALS = { JSON: 1, Promise: 1, fetch: 1, Symbol: 1, Map: 1, Set: 1, WeakMap: 1 };

function check(source, name) {
  var problems = [];
  var tokens = [];
  var ast;
  function report(loc, message) {
    problems.push(name + ':' + loc.line + ':' + (loc.column + 1) + ': ' + message);
  }
  try {
    ast = acorn.parse(source, {
      ecmaVersion: 3, allowReserved: 'never', sourceType: 'script', locations: true,
      onToken: tokens
    });
  } catch (e) {
    report(e.loc || { line: 0, column: -1 }, 'not ES3: ' + e.message.replace(/ \(\d+:\d+\)$/, ''));
    return problems;
  }
  for (var i = 0; i + 1 < tokens.length; i++) {
    if (tokens[i].type.label === ',' && tokens[i + 1].type.label === ']') {
      report(tokens[i].loc.start, 'trailing comma in an array literal (IE<9 adds an element)');
    }
  }
  walk(ast, null, function (node, parent) {
    if (node.type === 'MemberExpression' && !node.computed && ES5_MEMBERS[node.property.name] === 1) {
      report(node.property.loc.start, 'ES5 built-in .' + node.property.name + ' (absent in IE6-8)');
    }
    var isPropertyName = parent && ((parent.type === 'MemberExpression' && parent.property === node &&
      !parent.computed) || (parent.type === 'Property' && parent.key === node));
    if (node.type === 'Identifier' && GUARDED_GLOBALS[node.name] === 1 && !isPropertyName) {
      report(node.loc.start, 'bare global ' + node.name + ': read it from the global object after a check');
    }
  });
  return problems;
}

function walk(node, parent, visit) {
  visit(node, parent);
  for (var key in node) {
    if (key === 'loc') { continue; }
    var value = node[key];
    if (value && typeof value === 'object') {
      var children = Array.isArray(value) ? value : [value];
      for (var j = 0; j < children.length; j++) {
        if (children[j] && typeof children[j].type === 'string') { walk(children[j], node, visit); }
      }
    }
  }
}

var file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node check-es3.js FILE|-\n');
  process.exit(2);
}
var text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
var found = check(text, file === '-' ? '<stdin>' : file);
if (found.length) {
  process.stdout.write(found.join('\n') + '\n');
  process.exit(1);
}
process.stdout.write('ok\n');
