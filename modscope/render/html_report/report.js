/* modscope HTML report: tree, graph, findings, gradients and diff, drawn from the JSON embedded in the page.
   Plain script, no library, no network. Data is only ever written with textContent, never as markup. */
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  function doc(id) { var el = $(id); return el ? JSON.parse(el.textContent) : null; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  var SVGNS = 'http://www.w3.org/2000/svg';
  function sv(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  var P = doc('modscope-page'), S = doc('modscope-summary'), G = doc('modscope-grads'),
      T = doc('modscope-time'), D = doc('modscope-diff');

  /* ---------- number formatting ---------- */
  function count(n) {
    if (n === null || n === undefined || n === '') return '';
    if (typeof n !== 'number') return String(n);
    var a = Math.abs(n);
    if (a >= 1e12) return (n / 1e12).toFixed(2) + 'T';
    if (a >= 1e9) return (n / 1e9).toFixed(2) + 'G';
    if (a >= 1e6) return (n / 1e6).toFixed(2) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(1) + 'K';
    return String(n);
  }
  function bytes(n) {
    if (n === null || n === undefined) return '';
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
  }
  function nanos(ns) {
    if (ns === null || ns === undefined) return '';
    if (ns >= 1e9) return (ns / 1e9).toFixed(2) + ' s';
    if (ns >= 1e6) return (ns / 1e6).toFixed(2) + ' ms';
    if (ns >= 1e3) return (ns / 1e3).toFixed(1) + ' \u00b5s';
    return Math.round(ns) + ' ns';
  }
  function shape(v) {
    if (v === null || v === undefined) return '';
    if (Array.isArray(v)) return v.length === 1 ? shape(v[0]) : '(' + v.map(shape).join(', ') + ')';
    if (typeof v === 'object') {
      if (Array.isArray(v.shape)) return v.shape.join('\u00d7') || 'scalar';
      if (v.fields) return v.type + '{' + Object.keys(v.fields).map(function (k) { return k + ': ' + shape(v.fields[k]); }).join(', ') + '}';
      if (v.repr !== undefined) return v.type;
      return '{' + Object.keys(v).map(function (k) { return k + ': ' + shape(v[k]); }).join(', ') + '}';
    }
    return String(v);
  }

  /* ---------- sections ---------- */
  function show(id, label) {
    $(id).hidden = false;
    var a = el('a', '', label); a.href = '#' + id; $('sections').appendChild(a);
  }
  var jsonList = Array.prototype.map.call(document.querySelectorAll('script[type="application/json"]'),
    function (s) { return s.id; });
  $('json-list').textContent = jsonList.join(', ');

  var highlight = function () {};  // set once the graph is drawn
  if (S) initModel();
  if (D) initDiff();
  document.documentElement.setAttribute('data-ready', '1');
  performance.mark('modscope-ready');
  requestAnimationFrame(function () { setTimeout(function () { performance.mark('modscope-painted'); }, 0); });

  function initModel() {
    var M = S.modules, n = M.length, kids = P.kids;
    var runSize = P.run_size, runOf = P.run_of, runLabel = P.run_label;
    var parent = new Int32Array(n).fill(-1);
    for (var i = 0; i < n; i++) for (var j = 0; j < kids[i].length; j++) if (parent[kids[i][j]] < 0 && kids[i][j] !== 0) parent[kids[i][j]] = i;
    var lowName = M.map(function (m) { return m.name.toLowerCase(); });
    var lowType = M.map(function (m) { return m.type.toLowerCase(); });
    var where = {};  // module name -> dtype/device of its own tensors
    (S.parameters || []).concat(S.buffers || []).forEach(function (t) {
      var w = where[t.module] || (where[t.module] = {});
      w[t.dtype + ' ' + t.device] = true;
    });
    var times = {};
    if (T) T.layers.forEach(function (t) { times[t.name] = t; });
    var fwd = !!S.forward;

    var tot = S.totals, line = $('totals');
    function fact(label, value) { line.appendChild(document.createTextNode(label + ' ')); line.appendChild(el('b', '', value)); line.appendChild(document.createTextNode('   ')); }
    fact('params', count(tot.params)); fact('trainable', count(tot.trainable_params));
    fact('buffers', count(tot.buffers)); fact('modules', count(tot.modules));
    fact('weights', bytes(tot.param_bytes + tot.buffer_bytes));
    if (fwd && S.flops_total !== null && S.flops_total !== undefined) fact('FLOPs', count(S.flops_total));
    if (fwd && S.memory && S.memory.training_total) fact('training memory', bytes(S.memory.training_total));
    if (T) fact('forward time', nanos(T.forward.bare.median_ns));

    /* ---------- columns ---------- */
    function first(m, k) { return M[m][k]; }
    var COLS = [
      { key: 'name', title: 'module', width: 'minmax(180px, 3fr)', min: 180 },
      { key: 'type', title: 'type', width: 'minmax(84px, 1.2fr)', min: 84, value: function (m) { return M[m].type; } },
      { key: 'params', title: 'params', num: true, value: function (m) { return M[m].params_total; }, fmt: count },
      { key: 'buffers', title: 'buffers', num: true, value: function (m) { return M[m].buffers_total; }, fmt: count },
      { key: 'trainable', title: 'trainable', num: true, value: function (m) { return M[m].trainable_total; }, fmt: count },
      { key: 'where', title: 'dtype/device', width: 'minmax(84px, 1fr)', min: 84, value: function (m) { return Object.keys(where[M[m].name] || {}).join(', '); } }
    ];
    if (fwd) COLS.push(
      { key: 'in', title: 'input', width: 'minmax(76px, 1fr)', min: 76, cls: 'shape', value: function (m) { return shape(first(m, 'input_shapes')); } },
      { key: 'out', title: 'output', width: 'minmax(76px, 1fr)', min: 76, cls: 'shape', value: function (m) { return shape(first(m, 'output_shapes')); } },
      { key: 'calls', title: 'calls', num: true, value: function (m) { return first(m, 'calls'); }, fmt: count },
      { key: 'flops', title: 'FLOPs', num: true, value: function (m) { return first(m, 'flops'); }, fmt: count },
      { key: 'act', title: 'act. bytes', num: true, value: function (m) { return first(m, 'output_bytes'); }, fmt: bytes });
    if (T) COLS.push(
      { key: 'self', title: 'self time', num: true, value: function (m) { var t = times[M[m].name]; return t ? t.forward.self.median_ns : null; }, fmt: nanos },
      { key: 'total', title: 'total time', num: true, value: function (m) { var t = times[M[m].name]; return t ? t.forward.total.median_ns : null; }, fmt: nanos });
    var template = COLS.map(function (c) { return c.width || 'minmax(64px, 0.6fr)'; }).join(' ');
    var minWidth = COLS.reduce(function (s, c) { return s + (c.min || 64); }, 0) + 16 + 'px';
    var head = $('tree-head');
    head.style.gridTemplateColumns = template;
    head.style.minWidth = minWidth; $('tree-body').style.minWidth = minWidth;
    var sortKey = null, sortDir = 1;
    COLS.forEach(function (c) {
      var b = el('button', c.num ? 'num' : '', c.title);
      b.type = 'button'; b.dataset.key = c.key; b.title = 'sort by ' + c.title;
      b.addEventListener('click', function () {
        if (sortKey === c.key) { if (sortDir === (c.num ? -1 : 1)) sortDir = -sortDir; else { sortKey = null; } }
        else { sortKey = c.key; sortDir = c.num ? -1 : 1; }
        Array.prototype.forEach.call(head.children, function (h) { h.removeAttribute('aria-sort'); });
        if (sortKey) b.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
        rebuild();
      });
      head.appendChild(b);
    });
    function keyOf(m) {
      if (sortKey === 'name') return M[m].name;
      for (var i = 0; i < COLS.length; i++) if (COLS[i].key === sortKey) return COLS[i].value(m);
      return null;
    }
    function compare(a, b) {
      var x = keyOf(a), y = keyOf(b);
      if (x === y) return 0;
      if (x === null || x === undefined || x === '') return 1;  // missing values last either way
      if (y === null || y === undefined || y === '') return -1;
      return (x < y ? -1 : 1) * sortDir;
    }

    /* ---------- tree state: rows are built from expanded nodes only and drawn in a window ---------- */
    var expanded = new Uint8Array(n), collapse = true, rows = [], selected = -1;
    function childRows(i) {
      var out = [];
      kids[i].forEach(function (c) {
        if (collapse && runOf[c] !== undefined) return;
        out.push(c);
      });
      if (sortKey) out.sort(compare);
      return out;
    }
    function hasKids(m) { return kids[m].length > 0; }
    function rebuild() {
      rows = [0];
      var stack = expanded[0] ? childRows(0).reverse() : [];
      while (stack.length) {
        var m = stack.pop();
        rows.push(m);
        if (expanded[m]) { var c = childRows(m); for (var k = c.length - 1; k >= 0; k--) stack.push(c[k]); }
      }
      $('tree-spacer').style.height = (rows.length * ROW) + 'px';
      body.style.height = Math.min(Math.max(240, window.innerHeight * 0.7), 640, rows.length * ROW + 6) + 'px';
      $('row-count').textContent = rows.length + ' of ' + n + ' modules shown';
      draw(true);
    }
    var ROW = 22, body = $('tree-body'), box = $('tree-rows'), drawn = [-1, -1];
    function label(m) {  // the name below its parent's, as in the terminal tree; the whole name is the title
      if (m === 0) return S.model.type;
      var full = collapse && runSize[m] ? runLabel[m] : M[m].name, up = parent[m] > 0 ? M[parent[m]].name + '.' : '';
      return up && full.indexOf(up) === 0 ? full.slice(up.length) : full;
    }
    function draw(force) {
      var top = body.scrollTop, h = body.clientHeight || 600;
      var start = Math.max(0, Math.floor(top / ROW) - 8), end = Math.min(rows.length, Math.ceil((top + h) / ROW) + 8);
      if (!force && start === drawn[0] && end === drawn[1]) return;
      drawn = [start, end];
      box.style.top = (start * ROW) + 'px';
      var frag = document.createDocumentFragment();
      for (var r = start; r < end; r++) frag.appendChild(rowElement(rows[r]));
      box.replaceChildren(frag);
    }
    function rowElement(m) {
      var row = el('div', 'row' + (m === selected ? ' sel' : ''));
      row.style.gridTemplateColumns = template;
      row.setAttribute('role', 'row');
      row.dataset.m = m; row.dataset.name = M[m].name;
      var depth = M[m].depth;
      var name = el('span', 'name');
      name.style.paddingLeft = (6 + depth * 14) + 'px';
      var t = el('span', 'toggle', hasKids(m) ? (expanded[m] ? '\u25be' : '\u25b8') : '');
      name.appendChild(t);
      name.appendChild(el('span', '', label(m)));
      if (collapse && runSize[m]) name.appendChild(el('span', 'run', ' \u00d7' + runSize[m]));
      name.title = M[m].name || '(root)';
      row.appendChild(name);
      for (var c = 1; c < COLS.length; c++) {
        var col = COLS[c], v = col.value(m);
        var cell = el('span', (col.num ? 'num ' : '') + (col.cls || '') + (col.key === 'type' ? ' type' : ''), col.fmt ? col.fmt(v) : v);
        if (!col.num) cell.title = cell.textContent;
        row.appendChild(cell);
      }
      return row;
    }
    body.addEventListener('scroll', function () { draw(false); });
    box.addEventListener('click', function (e) {
      var row = e.target.closest('.row'); if (!row) return;
      var m = +row.dataset.m;
      if (e.target.classList.contains('toggle')) { expanded[m] = expanded[m] ? 0 : 1; rebuild(); return; }
      select(m, { scroll: false });
    });
    box.addEventListener('dblclick', function (e) {
      var row = e.target.closest('.row'); if (!row) return;
      var m = +row.dataset.m; if (hasKids(m)) { expanded[m] = expanded[m] ? 0 : 1; rebuild(); }
    });
    body.tabIndex = 0;  // keys: up/down move the selection, right opens, left closes or goes to the parent
    body.addEventListener('keydown', function (e) {
      var r = rows.indexOf(selected), m = selected;
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        r = Math.max(0, Math.min(rows.length - 1, r + (e.key === 'ArrowDown' ? 1 : -1)));
        select(rows[r]);
      } else if (e.key === 'ArrowRight' && m >= 0 && hasKids(m) && !expanded[m]) { expanded[m] = 1; rebuild(); }
      else if (e.key === 'ArrowLeft' && m >= 0) {
        if (expanded[m] && hasKids(m)) { expanded[m] = 0; rebuild(); } else if (parent[m] >= 0) select(parent[m]);
      } else return;
      e.preventDefault();
    });
    $('collapse').addEventListener('change', function (e) { collapse = e.target.checked; rebuild(); });
    $('expand-all').addEventListener('click', function () { expanded.fill(1); rebuild(); });
    $('collapse-all').addEventListener('click', function () { expanded.fill(0); expanded[0] = 1; rebuild(); });

    /* open the first levels, breadth first, while fewer than ~60 rows show */
    expanded[0] = 1;
    var level = [0], shown = 1 + childRows(0).length;
    while (level.length) {
      var next = [];
      level.forEach(function (m) { childRows(m).forEach(function (c) { if (hasKids(c)) next.push(c); }); });
      var more = next.reduce(function (s, m) { return s + childRows(m).length; }, 0);
      if (!next.length || shown + more > 60) break;
      next.forEach(function (m) { expanded[m] = 1; });
      shown += more; level = next;
    }

    /* ---------- selection ---------- */
    function select(m, opts) {
      opts = opts || {};
      var hidden = false;
      for (var a = m; a >= 0; a = parent[a]) if (runOf[a] !== undefined) hidden = true;
      if (hidden && collapse) { collapse = false; $('collapse').checked = false; }
      for (var p = parent[m]; p >= 0; p = parent[p]) expanded[p] = 1;
      selected = m;
      rebuild();
      var r = rows.indexOf(m);
      if (opts.scroll !== false && r >= 0) {
        var top = r * ROW;
        if (top < body.scrollTop || top > body.scrollTop + body.clientHeight - ROW) body.scrollTop = Math.max(0, top - body.clientHeight / 2);
        draw(true);
      }
      details(m);
      if (!opts.fromGraph) highlight(m);
      document.documentElement.setAttribute('data-selected', M[m].name);
    }
    window.modscopeSelect = function (name) {
      for (var i = 0; i < n; i++) if (M[i].name === name) { select(i); return true; }
      return false;
    };

    function details(m) {
      var d = $('details'), info = M[m];
      d.replaceChildren();
      d.appendChild(el('h3', '', info.name || '(root)'));
      var table = el('table');
      function tr(k, v) { if (v === '' || v === null || v === undefined) return; var r = el('tr'); r.appendChild(el('td', '', k)); r.appendChild(el('td', '', v)); table.appendChild(r); }
      tr('type', info.type); tr('extra', info.extra); tr('depth', info.depth);
      tr('params (own / total)', count(info.params) + ' / ' + count(info.params_total));
      tr('buffers (own / total)', count(info.buffers) + ' / ' + count(info.buffers_total));
      tr('trainable', count(info.trainable_total)); tr('mode', info.training ? 'train' : 'eval');
      if (info.aliases && info.aliases.length) tr('also named', info.aliases.join(', '));
      if (fwd) { tr('calls', info.calls); tr('FLOPs (self)', count(info.flops) + ' (' + count(info.self_flops) + ')'); tr('activation bytes', bytes(info.output_bytes)); }
      var t = times[info.name];
      if (t) { tr('forward self / total', nanos(t.forward.self.median_ns) + ' / ' + nanos(t.forward.total.median_ns)); }
      d.appendChild(table);
      if (fwd && info.calls) {
        d.appendChild(el('div', 'muted', 'input')); d.appendChild(el('pre', '', JSON.stringify(info.input_shapes)));
        d.appendChild(el('div', 'muted', 'output')); d.appendChild(el('pre', '', JSON.stringify(info.output_shapes)));
      }
      var tensors = (S.parameters || []).concat(S.buffers || []).filter(function (x) { return x.module === info.name; });
      if (tensors.length) {
        d.appendChild(el('div', 'muted', 'tensors'));
        var tt = el('table');
        tensors.forEach(function (x) {
          var r = el('tr'); r.appendChild(el('td', '', x.name.slice(info.name ? info.name.length + 1 : 0)));
          r.appendChild(el('td', 'shape', (x.shape || ['?']).join('\u00d7') + ' ' + x.dtype)); tt.appendChild(r);
        });
        d.appendChild(tt);
      }
      var mine = P.findings.filter(function (f) { return f.module === m; });
      if (mine.length) {
        d.appendChild(el('div', 'muted', 'findings'));
        mine.forEach(function (f) { d.appendChild(el('div', 'sev-' + f.severity, f.code + ': ' + f.message)); });
      }
    }

    /* ---------- search ---------- */
    var search = $('search'), results = $('search-results'), found = [];
    search.addEventListener('input', function () {
      var q = search.value.trim().toLowerCase();
      results.replaceChildren(); found = [];
      if (!q) { results.hidden = true; $('search-count').textContent = ''; return; }
      var total = 0;
      for (var i = 0; i < n; i++) {
        if (lowName[i].indexOf(q) >= 0 || lowType[i].indexOf(q) >= 0) { total++; if (found.length < 100) found.push(i); }
      }
      found.forEach(function (i, k) {
        var li = el('li', k === 0 ? 'active' : '');
        li.appendChild(el('span', '', M[i].name || '(root)')); li.appendChild(el('span', 'type', '  ' + M[i].type));
        li.dataset.m = i; results.appendChild(li);
      });
      results.hidden = !found.length;
      $('search-count').textContent = total + (total === 1 ? ' match' : ' matches') + (total > found.length ? ' (first ' + found.length + ' listed)' : '');
    });
    search.addEventListener('keydown', function (e) { if (e.key === 'Enter' && found.length) select(found[0]); });
    results.addEventListener('click', function (e) { var li = e.target.closest('li'); if (li) select(+li.dataset.m); });

    /* ---------- graph: pan, zoom, and the link between boxes and modules ---------- */
    var svg = document.querySelector('#graph svg'), shapes = {};
    if (svg) {
      show('graph-section', 'graph');
      $('graph-mode').textContent = P.graph.mode || '';
      P.graph.nodes.forEach(function (m, k) { var g = $('msn-' + k); if (g && m >= 0) { g.dataset.m = m; (shapes[m] = shapes[m] || []).push(g); } });
      P.graph.clusters.forEach(function (m, k) { var g = $('msc-' + k); if (g && m >= 0) { g.dataset.m = m; (shapes[m] = shapes[m] || []).push(g); } });
      Array.prototype.forEach.call(svg.querySelectorAll('title'), function (t) { t.remove(); });
      svg.removeAttribute('width'); svg.removeAttribute('height');
      var vb0 = svg.getAttribute('viewBox').split(/[\s,]+/).map(Number), vb = vb0.slice();
      var setVB = function () { svg.setAttribute('viewBox', vb.join(' ')); };
      var paneBox = $('graph').getBoundingClientRect(), pw = Math.max(1, paneBox.width), ph = Math.max(1, paneBox.height);
      var READABLE = 0.6;  // px per point below which labels are too small to read: start there, at the top
      if (Math.min(pw / vb0[2], ph / vb0[3]) < READABLE) {
        var w = pw / READABLE, h = ph / READABLE;
        vb = [vb0[2] > w ? vb0[0] : vb0[0] + (vb0[2] - w) / 2, vb0[1], w, h]; setVB();
      }
      var zoom = function (s, cx, cy) {
        if (cx === undefined) { cx = vb[0] + vb[2] / 2; cy = vb[1] + vb[3] / 2; }
        vb = [cx - (cx - vb[0]) * s, cy - (cy - vb[1]) * s, vb[2] * s, vb[3] * s]; setVB();
      };
      var toSvg = function (x, y) { var pt = svg.createSVGPoint(); pt.x = x; pt.y = y; return pt.matrixTransform(svg.getScreenCTM().inverse()); };
      var pane = $('graph');
      pane.addEventListener('wheel', function (e) { e.preventDefault(); var p = toSvg(e.clientX, e.clientY); zoom(Math.pow(1.0015, e.deltaY), p.x, p.y); }, { passive: false });
      var drag = null;
      pane.addEventListener('pointerdown', function (e) { drag = { x: e.clientX, y: e.clientY, vb: vb.slice(), moved: false }; });
      window.addEventListener('pointermove', function (e) {
        if (!drag) return;
        var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
        drag.moved = true; pane.classList.add('dragging');
        var scale = 1 / svg.getScreenCTM().a;
        vb = [drag.vb[0] - dx * scale, drag.vb[1] - dy * scale, vb[2], vb[3]]; setVB();
      });
      window.addEventListener('pointerup', function () { pane.classList.remove('dragging'); setTimeout(function () { drag = null; }, 0); });
      svg.addEventListener('click', function (e) {
        if (drag && drag.moved) return;
        var g = e.target.closest('g.node, g.cluster');
        if (g && g.dataset.m !== undefined) { mark(+g.dataset.m, g); select(+g.dataset.m, { fromGraph: true }); }
      });
      $('zoom-in').addEventListener('click', function () { zoom(1 / 1.25); });
      $('zoom-out').addEventListener('click', function () { zoom(1.25); });
      $('zoom-fit').addEventListener('click', function () { vb = vb0.slice(); setVB(); });
      var mark = function (m, only) {
        Array.prototype.forEach.call(svg.querySelectorAll('.ms-sel'), function (g) { g.classList.remove('ms-sel'); });
        (only ? [only] : shapes[m] || []).forEach(function (g) { g.classList.add('ms-sel'); });
      };
      var highlightShapes = function (m) {
        var a = m;
        while (a >= 0 && !shapes[a]) a = runOf[a] !== undefined ? runOf[a] : parent[a];
        if (a < 0) { mark(-1); return; }
        mark(a);
        var g = shapes[a][0], b = g.getBBox(), ctm = svg.getScreenCTM().inverse().multiply(g.getScreenCTM());
        var p1 = svg.createSVGPoint(); p1.x = b.x + b.width / 2; p1.y = b.y + b.height / 2; p1 = p1.matrixTransform(ctm);
        if (p1.x < vb[0] || p1.x > vb[0] + vb[2] || p1.y < vb[1] || p1.y > vb[1] + vb[3]) { vb = [p1.x - vb[2] / 2, p1.y - vb[3] / 2, vb[2], vb[3]]; setVB(); }
      };
      highlight = highlightShapes;
    } else if (P.graph && P.graph.note) {
      show('graph-section', 'graph');
      $('graph').hidden = true;
    }
    if (P.graph && P.graph.note) { $('graph-note').hidden = false; $('graph-note').textContent = 'The graph ' + P.graph.note; }

    /* ---------- findings ---------- */
    var list = $('findings');
    if (P.findings.length) {
      show('findings-section', 'findings (' + P.findings.length + ')');
      $('findings-count').textContent = P.findings.length;
      var frag = document.createDocumentFragment();
      P.findings.forEach(function (f) {
        var li = el('li');
        li.appendChild(el('span', 'sev sev-' + f.severity, f.severity));
        li.appendChild(el('span', 'muted', f.source + ' \u00b7 ' + f.code + '  '));
        var a = el('a', '', f.name || '(model)'); a.dataset.m = f.module; a.tabIndex = 0;
        li.appendChild(a); li.appendChild(document.createTextNode('  ' + f.message));
        frag.appendChild(li);
      });
      list.appendChild(frag);
      list.addEventListener('click', function (e) { var a = e.target.closest('a'); if (a) { select(+a.dataset.m); $('tree-section').scrollIntoView(); } });
    }
    if (G) grads(select);

    show('tree-section', 'modules');
    $('sections').insertBefore($('sections').lastChild, $('sections').firstChild);
    rebuild();
  }

  /* ---------- gradient flow: one bar per parameter, log-scale norm, coloured by verdict ---------- */
  function grads(select) {
    show('grads-section', 'gradients');
    var COLOR = { ok: '#2e9e5b', vanishing: '#e0a100', exploding: '#d6336c', zero: '#868e96', no_grad: '#7048e8', nonfinite: '#c0392b', frozen: '#ced4da' };
    var params = G.params, LIMIT = 4000, shown = params.slice(0, LIMIT);
    var counts = Object.keys(G.counts).map(function (k) { return G.counts[k] + ' ' + k; }).join(', ');
    $('grads-summary').textContent = (G.ok ? 'ok' : 'problems') + ' \u00b7 ' + counts + ' \u00b7 loss ' + G.loss.kind + (params.length > LIMIT ? ' \u00b7 first ' + LIMIT + ' of ' + params.length + ' drawn' : '');
    var legend = $('grads-legend');
    Object.keys(COLOR).forEach(function (k) { var s = el('span'); var i = el('i'); i.style.background = COLOR[k]; s.appendChild(i); s.appendChild(document.createTextNode(k)); legend.appendChild(s); });
    var logs = shown.map(function (p) { return typeof p.norm === 'number' && p.norm > 0 ? Math.log10(p.norm) : null; });
    var finite = logs.filter(function (v) { return v !== null && isFinite(v); });
    finite.push(Math.log10(G.thresholds.vanishing), Math.log10(G.thresholds.exploding));
    var lo = Math.floor(Math.min.apply(null, finite)), hi = Math.ceil(Math.max.apply(null, finite));
    var LEFT = 300, W = 520, RH = 16, H = shown.length * RH + 30;
    var chart = sv('svg', { width: LEFT + W + 80, height: H, role: 'img', 'aria-label': 'gradient norm per parameter, log scale' });
    var x = function (v) { return LEFT + (v - lo) / Math.max(1e-9, hi - lo) * W; };
    for (var d = lo; d <= hi; d++) {
      chart.appendChild(sv('line', { x1: x(d), x2: x(d), y1: 14, y2: H, 'class': 'axis' }));
      var tx = sv('text', { x: x(d), y: 10, 'text-anchor': 'middle' }); tx.textContent = '1e' + d; chart.appendChild(tx);
    }
    [G.thresholds.vanishing, G.thresholds.exploding].forEach(function (t) { chart.appendChild(sv('line', { x1: x(Math.log10(t)), x2: x(Math.log10(t)), y1: 14, y2: H, 'class': 'threshold' })); });
    var owners = {};
    S.modules.forEach(function (m, i) { owners[m.name] = i; });
    shown.forEach(function (p, k) {
      var y = 20 + k * RH, g = sv('g', { 'class': 'bar' });
      g.dataset.m = owners[p.module] !== undefined ? owners[p.module] : 0;
      var name = sv('text', { x: LEFT - 6, y: y + 11, 'text-anchor': 'end' }); name.textContent = p.name; g.appendChild(name);
      var v = logs[k], color = COLOR[p.status] || '#999';
      if (v !== null && isFinite(v)) g.appendChild(sv('rect', { x: LEFT, y: y + 2, width: Math.max(1, x(v) - LEFT), height: RH - 5, fill: color }));
      var note = sv('text', { x: (v !== null && isFinite(v) ? x(v) : LEFT) + 4, y: y + 11 });
      note.textContent = p.status + (typeof p.norm === 'number' ? '  ' + p.norm.toExponential(2) : '');
      note.setAttribute('fill', color); g.appendChild(note);
      var tip = sv('title', {}); tip.textContent = p.name + ': ' + p.status + ', norm ' + p.norm; g.appendChild(tip);
      chart.appendChild(g);
    });
    chart.addEventListener('click', function (e) { var g = e.target.closest('g.bar'); if (g) { select(+g.dataset.m); $('tree-section').scrollIntoView(); } });
    $('grads').appendChild(chart);
  }

  /* ---------- checkpoint diff: one sortable table ---------- */
  function initDiff() {
    show('diff-section', 'diff');
    var rows = [];
    D.only_in_a.forEach(function (k) { rows.push({ change: 'only in A', key: k, detail: '', size: Infinity }); });
    D.only_in_b.forEach(function (k) { rows.push({ change: 'only in B', key: k, detail: '', size: Infinity }); });
    D.renamed.forEach(function (r) { rows.push({ change: 'renamed', key: r.a, detail: '\u2192 ' + r.b, size: Infinity }); });
    D.shape_changed.forEach(function (c) { rows.push({ change: 'shape', key: c.key, detail: c.a_shape.join('\u00d7') + ' \u2192 ' + c.b_shape.join('\u00d7'), size: Infinity }); });
    D.dtype_changed.forEach(function (c) { rows.push({ change: 'dtype', key: c.key, detail: c.a_dtype + ' \u2192 ' + c.b_dtype, size: Infinity }); });
    D.value_changed.forEach(function (c) {
      rows.push({ change: 'values', key: c.key, detail: '', size: num(c.rel_l2), max: num(c.max_abs_diff), mean: num(c.mean_abs_diff), differ: c.num_different });
    });
    function num(v) { return typeof v === 'number' ? v : (v === 'nan' ? NaN : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : null); }
    var summary = D.identical ? 'identical' : rows.length + ' changes' + (D.unchanged !== null ? ', ' + D.unchanged + ' tensors equal' : '');
    $('diff-summary').textContent = summary;
    $('totals').textContent = summary;
    var COLS = [
      { key: 'change', title: 'change' }, { key: 'key', title: 'key' }, { key: 'detail', title: 'detail' },
      { key: 'size', title: 'change size (rel. L2)', num: true }, { key: 'max', title: 'max |\u0394|', num: true },
      { key: 'mean', title: 'mean |\u0394|', num: true }, { key: 'differ', title: 'elements differing', num: true }
    ];
    var headRow = document.querySelector('#diff thead tr'), tbody = document.querySelector('#diff tbody');
    var sortKey = 'size', dir = -1, filter = '';
    COLS.forEach(function (c) {
      var th = el('th', c.num ? 'num' : ''), b = el('button', '', c.title); b.type = 'button'; b.dataset.key = c.key;
      b.addEventListener('click', function () { if (sortKey === c.key) dir = -dir; else { sortKey = c.key; dir = c.num ? -1 : 1; } draw(); });
      th.appendChild(b); headRow.appendChild(th);
    });
    function fmt(c, v) {
      if (v === undefined || v === null) return '';
      if (c.key === 'size' && v === Infinity) return '\u2014';
      if (typeof v === 'number' && c.key !== 'differ') return isFinite(v) ? v.toExponential(3) : String(v);
      return String(v);
    }
    function draw() {
      Array.prototype.forEach.call(headRow.querySelectorAll('button'), function (b) {
        if (b.dataset.key === sortKey) b.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending'); else b.removeAttribute('aria-sort');
      });
      var shown = rows.filter(function (r) { return !filter || r.key.toLowerCase().indexOf(filter) >= 0; });
      shown.sort(function (a, b) {
        var x = a[sortKey], y = b[sortKey];
        var xm = x === undefined || x === null || (typeof x === 'number' && isNaN(x)), ym = y === undefined || y === null || (typeof y === 'number' && isNaN(y));
        if (xm || ym) return xm === ym ? 0 : (xm ? 1 : -1);
        return x === y ? 0 : (x < y ? -1 : 1) * dir;
      });
      var frag = document.createDocumentFragment();
      shown.slice(0, 5000).forEach(function (r) {
        var tr = el('tr');
        COLS.forEach(function (c) { tr.appendChild(el('td', c.num ? 'num' : '', fmt(c, r[c.key]))); });
        frag.appendChild(tr);
      });
      tbody.replaceChildren(frag);
    }
    $('diff-search').addEventListener('input', function (e) { filter = e.target.value.trim().toLowerCase(); draw(); });
    draw();
  }
})();
