// The rlm trajectory viewer. Plain JavaScript, no build step, no dependencies.
// Routes: #/ (run list), #/run/ID (one run), #/run/ID/NODE (one run, NODE focused and expanded
// to: run-ID, it-RUN-N, cell-N, sub-N).
(function () {
  "use strict";
  var $ = function (sel) { return document.querySelector(sel); };
  var esc = window.escapeHtml;

  var state = {
    runId: null, tree: null, nodes: {}, open: {}, stamp: null, poll: null, listPoll: null,
    hits: [], hitIndex: -1, query: ""
  };

  // --- formatting -------------------------------------------------------------------------
  function fmtTokens(i, o) { return (i || 0).toLocaleString("en-US") + " in / " + (o || 0).toLocaleString("en-US") + " out"; }
  function fmtCost(c) { return c === null || c === undefined ? "-" : "$" + (c < 10 ? c.toFixed(4) : c.toFixed(2)); }
  function fmtSecs(s) {
    if (s === null || s === undefined) return "-";
    if (s < 60) return s.toFixed(2) + "s";
    var m = Math.floor(s / 60); return m + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  }
  function fmtTime(ts) {
    if (!ts) return "-";
    var d = new Date(ts * 1000), p = function (n) { return String(n).padStart(2, "0"); };
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }
  function oneLine(s, n) { s = String(s === null || s === undefined ? "" : s).replace(/\s+/g, " ").trim(); return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  function duration(r) {
    if (r.execution_time !== null && r.execution_time !== undefined) return r.execution_time;
    return (r.updated_at || r.started_at) - r.started_at;
  }

  function api(path, opts) {
    return fetch(path, opts).then(function (res) {
      return res.json().then(function (body) {
        if (!res.ok) throw new Error(body.error || ("HTTP " + res.status));
        return body;
      });
    });
  }
  function showError(msg) { var e = $("#error"); e.textContent = msg; e.hidden = !msg; }

  // --- run list -------------------------------------------------------------------------------
  function loadList() {
    var q = encodeURIComponent($("#list-filter").value.trim());
    var m = encodeURIComponent($("#model-filter").value.trim());
    var s = encodeURIComponent($("#status-filter").value);
    return api("/api/runs?n=500&q=" + q + "&model=" + m + "&status=" + s).then(function (body) {
      var tbody = $("#run-list tbody");
      var html = body.runs.map(function (r) {
        return '<tr class="run-row" data-id="' + esc(r.id) + '"><td class="mono">' + esc(r.id) + "</td><td>" +
          fmtTime(r.started_at) + '</td><td class="status ' + esc(r.status) + '">' + esc(r.status) + "</td><td>" +
          esc(r.root_model || "?") + "</td><td>" + fmtSecs(duration(r)) + "</td><td>" + r.iterations +
          "</td><td>" + fmtTokens(r.input_tokens, r.output_tokens) + "</td><td>" + fmtCost(r.cost) +
          '</td><td class="prompt">' + esc(oneLine(r.root_prompt || r.prompt, 140)) + "</td></tr>";
      }).join("");
      tbody.innerHTML = html;
      $("#list-empty").hidden = body.runs.length > 0;
    }).catch(function (e) { showError(e.message); });
  }

  function showList() {
    stopPolling();
    state.runId = null;
    $("#run-view").hidden = true;
    $("#list-view").hidden = false;
    document.title = "rlm trajectories";
    loadList();
    state.listPoll = setInterval(loadList, 3000);
  }

  // --- the node index -------------------------------------------------------------------------
  function indexTree(root) {
    var nodes = {};
    function addRun(run, parent) {
      var id = "run-" + run.id;
      nodes[id] = { id: id, type: "run", parent: parent, data: run };
      run.iterations.forEach(function (it) {
        var iid = "it-" + run.id + "-" + it.iteration;
        nodes[iid] = { id: iid, type: "iteration", parent: id, data: it, run: run };
        it.cells.forEach(function (cell) {
          var cid = "cell-" + cell.id;
          nodes[cid] = { id: cid, type: "cell", parent: iid, data: cell, run: run };
          cell.subcalls.forEach(function (s) { addSub(s, cid, run); });
        });
        it.subcalls.forEach(function (s) { addSub(s, iid, run); });
      });
      (run.children_unlinked || []).forEach(function (c) { addRun(c, id); });
    }
    function addSub(s, parent, run) {
      var sid = "sub-" + s.id;
      nodes[sid] = { id: sid, type: "subcall", parent: parent, data: s, run: run };
      if (s.child) addRun(s.child, sid);
    }
    addRun(root, null);
    return nodes;
  }

  function isOpen(id) {
    if (id in state.open) return state.open[id];
    var n = state.nodes[id];
    if (!n) return false;
    if (n.type === "subcall") return false;
    if (n.type === "run") return true;
    // Iterations and cells of the root are open; those of child runs open with their sub-call.
    return true;
  }

  // --- rendering --------------------------------------------------------------------------------
  function renderResponse(text) {
    var out = [], last = 0, re = /```([A-Za-z0-9_+-]*)[ \t]*\n([\s\S]*?)```/g, m;
    text = text || "";
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) out.push('<div class="prose">' + esc(text.slice(last, m.index).replace(/^\n+|\n+$/g, "")) + "</div>");
      var lang = m[1].toLowerCase();
      var body = (lang === "" || lang === "repl" || lang === "python" || lang === "py") ? window.highlightPython(m[2]) : esc(m[2]);
      out.push('<pre class="code"><span class="label">' + esc(m[1] || "code") + "</span>\n" + body + "</pre>");
      last = m.index + m[0].length;
    }
    if (last < text.length) out.push('<div class="prose">' + esc(text.slice(last).replace(/^\n+|\n+$/g, "")) + "</div>");
    return out.join("");
  }

  function head(id, title, meta, togglable) {
    var open = isOpen(id);
    return '<div class="node-head" data-toggle="' + (togglable ? id : "") + '">' +
      (togglable ? '<span class="toggle">' + (open ? "▾" : "▸") + "</span>" : "") +
      '<span class="title">' + title + '</span><span class="meta">' + meta + "</span>" +
      '<a class="node-link" href="#/run/' + esc(state.runId) + "/" + id + '" title="link to this node">#</a></div>';
  }

  function pre(cls, label, text) {
    if (text === null || text === undefined || text === "") return "";
    return '<div class="label">' + label + '</div><pre class="' + cls + '">' + esc(String(text)) + "</pre>";
  }

  function runHtml(run, isRoot) {
    var id = "run-" + run.id;
    var title = (isRoot ? "run " : "child run ") + '<span class="mono">' + esc(run.id) + "</span>";
    var meta = '<span class="status ' + esc(run.status) + '">' + esc(run.status) + "</span> · " + esc(run.root_model || "?") +
      " · depth " + run.depth + " · " + fmtSecs(duration(run)) + " · " + run.iterations.length + " iterations · " +
      fmtTokens(run.input_tokens, run.output_tokens) + " · " + fmtCost(run.cost);
    var h = '<div class="node run' + (isRoot ? "" : " child-run") + '" id="' + id + '" data-node="' + id + '">' +
      head(id, title, meta, !isRoot);
    if (isOpen(id)) {
      h += '<div class="node-body">';
      if (!isRoot && run.prompt) h += pre("", "prompt", run.prompt);
      run.iterations.forEach(function (it) { h += iterationHtml(run, it); });
      (run.children_unlinked || []).forEach(function (c) { h += runHtml(c, false); });
      run.notes.forEach(function (n) { h += '<div class="label">note ' + esc(n.type) + ": " + esc(oneLine(JSON.stringify(n.data), 300)) + "</div>"; });
      if (run.error) h += pre("error", "error", run.error);
      if (run.response !== null && run.response !== undefined && run.status !== "running")
        h += '<div class="final"><b>answer</b><div class="prose">' + esc(run.response) + "</div></div>";
      h += "</div>";
    }
    return h + "</div>";
  }

  function iterationHtml(run, it) {
    var id = "it-" + run.id + "-" + it.iteration;
    var meta = fmtSecs(it.iteration_time) + (it.input_tokens !== null && it.input_tokens !== undefined ? " · " + fmtTokens(it.input_tokens, it.output_tokens) + " · " + fmtCost(it.cost) : "") +
      " · " + it.cells.length + " cells" + (it.finished_at ? "" : " · running");
    var h = '<div class="node iteration" id="' + id + '" data-node="' + id + '">' + head(id, "iteration " + it.iteration, meta, true);
    if (isOpen(id)) {
      h += '<div class="node-body">';
      if (it.response) h += '<div class="label">response</div>' + renderResponse(it.response);
      it.cells.forEach(function (cell) { h += cellHtml(run, cell); });
      it.subcalls.forEach(function (s) { h += subcallHtml(run, s); });
      if (it.final_answer !== null && it.final_answer !== undefined)
        h += '<div class="final"><b>final answer</b><div class="prose">' + esc(it.final_answer) + "</div></div>";
      h += "</div>";
    }
    return h + "</div>";
  }

  function cellHtml(run, cell) {
    var id = "cell-" + cell.id;
    var meta = fmtSecs(cell.execution_time) + (cell.subcalls.length ? " · " + cell.subcalls.length + " sub-calls" : "") +
      (cell.error ? ' · <span class="status error">error</span>' : "") + (cell.timed_out ? " · timed out" : "");
    var h = '<div class="node cell" id="' + id + '" data-node="' + id + '">' + head(id, "cell " + (cell.idx + 1), meta, true);
    if (isOpen(id)) {
      h += '<div class="node-body"><pre class="code">' + window.highlightPython(cell.code || "") + "</pre>";
      h += pre("stdout", "stdout", cell.stdout) + pre("stderr", "stderr", cell.stderr) + pre("error", "error", cell.error);
      if (cell.variables && cell.variables.length) h += '<div class="label">variables: <span class="mono">' + esc(cell.variables.join(", ")) + "</span></div>";
      cell.subcalls.forEach(function (s) { h += subcallHtml(run, s); });
      h += "</div>";
    }
    return h + "</div>";
  }

  function subcallHtml(run, s) {
    var id = "sub-" + s.id;
    var kind = s.kind || "llm";
    var running = s.finished_at === null || s.finished_at === undefined;
    var meta = esc(s.model || "?") + " · " + (running ? "running" : fmtSecs(s.duration)) + " · " +
      fmtTokens(s.input_tokens, s.output_tokens) + " · " + fmtCost(s.cost) +
      (s.error ? ' · <span class="status error">error</span>' : "") + " · " + esc(oneLine(s.prompt, 90));
    var h = '<div class="node subcall ' + esc(kind) + (s.error ? " err" : "") + '" id="' + id + '" data-node="' + id + '">' +
      head(id, esc(kind) + "_query", meta, true);
    if (isOpen(id)) {
      h += '<div class="node-body">' + pre("", "prompt", s.prompt);
      if (!s.child) h += pre("", "response", s.response);
      if (s.error) h += pre("error", "error", s.error);
      if (s.child) h += runHtml(s.child, false);
      h += "</div>";
    }
    return h + "</div>";
  }

  function headerHtml(run) {
    var usage = (run.usage || []).map(function (u) {
      return "<tr><td>" + esc(u.model) + "</td><td>" + u.calls + " calls</td><td>" + fmtTokens(u.input_tokens, u.output_tokens) + "</td><td>" + fmtCost(u.cost) + "</td></tr>";
    }).join("");
    var children = 0, subs = 0;
    Object.keys(state.nodes).forEach(function (k) { var n = state.nodes[k]; if (n.type === "run") children++; if (n.type === "subcall") subs++; });
    return "<h1>" + esc(oneLine(run.root_prompt || run.prompt || run.id, 160)) + "</h1>" +
      '<div class="kv"><span>run <b class="mono">' + esc(run.id) + '</b></span><span>status <b class="status ' + esc(run.status) + '">' + esc(run.status) + "</b></span>" +
      "<span>model <b>" + esc(run.root_model || "?") + "</b></span><span>backend <b>" + esc(run.backend || "?") + "</b></span>" +
      "<span>env <b>" + esc(run.environment || "?") + "</b></span><span>started <b>" + fmtTime(run.started_at) + "</b></span>" +
      "<span>time <b>" + fmtSecs(duration(run)) + "</b></span><span>iterations <b>" + run.iterations.length + "</b></span>" +
      "<span>sub-calls <b>" + subs + "</b></span><span>child runs <b>" + (children - 1) + "</b></span>" +
      "<span>tokens <b>" + fmtTokens(run.input_tokens, run.output_tokens) + "</b></span><span>cost <b>" + fmtCost(run.cost) + "</b></span></div>" +
      (usage ? '<table class="usage-table">' + usage + "</table>" : "");
  }

  function renderWaterfall(root) {
    var rows = [], t0 = root.started_at, t1 = root.finished_at || root.updated_at || t0;
    var now = Date.now() / 1000;
    if (root.status === "running") t1 = Math.max(t1, now);
    function addRun(run, depth) {
      run.iterations.forEach(function (it) {
        if (rows.length > 3000) return;
        var s = it.started_at || t0, e = it.finished_at || (it.iteration_time ? s + it.iteration_time : t1);
        rows.push({ node: "it-" + run.id + "-" + it.iteration, label: (depth ? "· ".repeat(depth) : "") + "iteration " + it.iteration, s: s, e: e, cls: "iteration" + (it.finished_at ? "" : " open") });
        var subs = [];
        it.cells.forEach(function (c) { subs = subs.concat(c.subcalls); });
        subs = subs.concat(it.subcalls);
        subs.forEach(function (sc) {
          if (rows.length > 3000) return;
          var ss = sc.started_at || s, se = sc.finished_at || t1;
          t1 = Math.max(t1, se);
          rows.push({ node: "sub-" + sc.id, label: "· ".repeat(depth + 1) + (sc.kind || "llm") + " " + (sc.model || ""), s: ss, e: se,
            cls: (sc.kind || "llm") + (sc.error ? " err" : "") + (sc.finished_at ? "" : " open") });
          if (sc.child) addRun(sc.child, depth + 2);
        });
      });
    }
    addRun(root, 0);
    var span = Math.max(t1 - t0, 1e-6);
    var html = rows.map(function (r) {
      var left = Math.max(0, (r.s - t0) / span * 100), width = Math.max(0.15, (r.e - r.s) / span * 100);
      return '<div class="wf-row"><span class="wf-label">' + esc(r.label) + '</span><div class="wf-track"><div class="wf-bar ' + r.cls +
        '" data-goto="' + r.node + '" style="left:' + left.toFixed(3) + "%;width:" + Math.min(width, 100 - left).toFixed(3) + '%" title="' +
        esc(r.label.replace(/^[· ]+/, "")) + " · " + fmtSecs(r.e - r.s) + '"></div></div><span class="wf-time">' + fmtSecs(r.e - r.s) + "</span></div>";
    }).join("");
    $("#waterfall").innerHTML = html || '<div class="label">no timed steps yet</div>';
  }

  function render() {
    var root = state.tree;
    $("#run-header").innerHTML = headerHtml(root);
    renderWaterfall(root);
    $("#tree").innerHTML = runHtml(root, true);
    markMatches();
    $("#live").hidden = root.status !== "running";
    document.title = "rlm · " + root.id;
  }

  // --- search -------------------------------------------------------------------------------------
  function nodeTexts(n) {
    var d = n.data;
    switch (n.type) {
      case "run": return [d.prompt, d.root_prompt, d.response, d.error, d.id];
      case "iteration": return [d.response, d.final_answer];
      case "cell": return [d.code, d.stdout, d.stderr, d.error];
      case "subcall": return [d.prompt, d.response, d.error, d.model];
    }
    return [];
  }

  function runSearch(q) {
    state.query = q;
    state.hits = [];
    state.hitIndex = -1;
    if (q) {
      var ql = q.toLowerCase();
      Object.keys(state.nodes).forEach(function (id) {
        var n = state.nodes[id];
        if (nodeTexts(n).some(function (t) { return t && String(t).toLowerCase().indexOf(ql) >= 0; })) state.hits.push(id);
      });
    }
    $("#search-count").textContent = q ? (state.hits.length ? state.hits.length + " matches" : "no matches") : "";
    if (state.hits.length) gotoHit(0); else render();
  }

  function gotoHit(i) {
    if (!state.hits.length) return;
    state.hitIndex = (i + state.hits.length) % state.hits.length;
    $("#search-count").textContent = (state.hitIndex + 1) + " / " + state.hits.length;
    focusNode(state.hits[state.hitIndex], false);
  }

  function markMatches() {
    var q = state.query;
    if (!q) return;
    var ql = q.toLowerCase(), tree = $("#tree");
    var walker = document.createTreeWalker(tree, NodeFilter.SHOW_TEXT, null), texts = [], t;
    while ((t = walker.nextNode())) { if (t.nodeValue.toLowerCase().indexOf(ql) >= 0) texts.push(t); }
    texts.forEach(function (node) {
      var text = node.nodeValue, lower = text.toLowerCase(), frag = document.createDocumentFragment(), pos = 0, k;
      while ((k = lower.indexOf(ql, pos)) >= 0) {
        frag.appendChild(document.createTextNode(text.slice(pos, k)));
        var m = document.createElement("mark"); m.textContent = text.slice(k, k + q.length); frag.appendChild(m);
        pos = k + q.length;
      }
      frag.appendChild(document.createTextNode(text.slice(pos)));
      node.parentNode.replaceChild(frag, node);
    });
  }

  // --- navigation -------------------------------------------------------------------------------------
  function focusNode(id, updateHash) {
    var n = state.nodes[id];
    if (!n) { showError("No node " + id + " in this run."); return; }
    state.open[id] = true;
    for (var p = n.parent; p; p = state.nodes[p] && state.nodes[p].parent) state.open[p] = true;
    render();
    var el = document.getElementById(id);
    if (el) {
      document.querySelectorAll(".node.focus").forEach(function (e) { e.classList.remove("focus"); });
      el.classList.add("focus");
      var mark = el.querySelector("mark");
      if (mark) mark.classList.add("current");
      el.scrollIntoView({ block: "center" });
    }
    if (updateHash) history.replaceState(null, "", "#/run/" + state.runId + "/" + id);
  }

  function stopPolling() {
    if (state.poll) { clearInterval(state.poll); state.poll = null; }
    if (state.listPoll) { clearInterval(state.listPoll); state.listPoll = null; }
  }

  function loadRun(id, nodeId) {
    stopPolling();
    $("#list-view").hidden = true;
    $("#run-view").hidden = false;
    var same = state.runId === id && state.tree;
    var p = same ? Promise.resolve(state.tree) : api("/api/runs/" + encodeURIComponent(id));
    return p.then(function (tree) {
      if (!same) {
        state.runId = tree.id;
        state.tree = tree;
        state.nodes = indexTree(tree);
        state.open = {};
        state.query = "";
        $("#search").value = "";
        $("#search-count").textContent = "";
      }
      showError("");
      if (nodeId) focusNode(nodeId, false); else render();
      if (tree.status === "running") startLive();
    }).catch(function (e) { showError(e.message); });
  }

  function startLive() {
    state.poll = setInterval(function () {
      api("/api/runs/" + encodeURIComponent(state.runId) + "/stamp").then(function (st) {
        var key = st.updated_at + "/" + st.runs + "/" + st.subcalls + "/" + st.status;
        if (state.stamp === key) return;
        state.stamp = key;
        return api("/api/runs/" + encodeURIComponent(state.runId)).then(function (tree) {
          var scroll = window.scrollY;
          state.tree = tree;
          state.nodes = indexTree(tree);
          render();
          window.scrollTo(0, scroll);
          if (tree.status !== "running") { clearInterval(state.poll); state.poll = null; }
        });
      }).catch(function () { /* the server may be restarting; keep polling */ });
    }, 1000);
  }

  function route() {
    var h = location.hash.replace(/^#/, "");
    var m = h.match(/^\/run\/([^\/]+)(?:\/(.+))?$/);
    if (m) loadRun(decodeURIComponent(m[1]), m[2] ? decodeURIComponent(m[2]) : null);
    else showList();
  }

  // --- upload ---------------------------------------------------------------------------------------
  function upload(file) {
    if (!file) return;
    showError("");
    file.text().then(function (text) {
      return api("/api/upload?name=" + encodeURIComponent(file.name), { method: "POST", body: text, headers: { "Content-Type": "application/x-ndjson" } });
    }).then(function (body) {
      if (!body.runs.length) throw new Error(file.name + " holds no run");
      state.runId = null;
      location.hash = "#/run/" + body.runs[0];
    }).catch(function (e) { showError("Could not open " + file.name + ": " + e.message); });
  }

  // --- events -------------------------------------------------------------------------------------------
  document.addEventListener("click", function (ev) {
    var row = ev.target.closest(".run-row");
    if (row) { location.hash = "#/run/" + row.getAttribute("data-id"); return; }
    var bar = ev.target.closest("[data-goto]");
    if (bar) { focusNode(bar.getAttribute("data-goto"), true); return; }
    if (ev.target.closest(".node-link")) return;
    var headEl = ev.target.closest(".node-head");
    if (headEl && headEl.getAttribute("data-toggle")) {
      var id = headEl.getAttribute("data-toggle");
      state.open[id] = !isOpen(id);
      render();
      var el = document.getElementById(id);
      if (el) el.scrollIntoView({ block: "nearest" });
    }
  });
  $("#search").addEventListener("input", function (ev) {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(function () { runSearch(ev.target.value.trim()); }, 150);
  });
  $("#search").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter") { ev.preventDefault(); if (state.query !== ev.target.value.trim()) runSearch(ev.target.value.trim()); else gotoHit(state.hitIndex + (ev.shiftKey ? -1 : 1)); }
  });
  $("#search-next").addEventListener("click", function () { gotoHit(state.hitIndex + 1); });
  $("#search-prev").addEventListener("click", function () { gotoHit(state.hitIndex - 1); });
  $("#expand-all").addEventListener("click", function () { Object.keys(state.nodes).forEach(function (k) { state.open[k] = true; }); render(); });
  $("#collapse-all").addEventListener("click", function () { Object.keys(state.nodes).forEach(function (k) { if (state.nodes[k].type !== "iteration" || state.nodes[k].run !== state.tree) state.open[k] = false; }); state.open["run-" + state.tree.id] = true; render(); });
  ["#list-filter", "#model-filter"].forEach(function (s) { $(s).addEventListener("input", function () { clearTimeout(state.listTimer); state.listTimer = setTimeout(loadList, 200); }); });
  $("#status-filter").addEventListener("change", loadList);
  $("#file-input").addEventListener("change", function (ev) { upload(ev.target.files[0]); ev.target.value = ""; });
  var dragDepth = 0;
  window.addEventListener("dragenter", function (ev) { ev.preventDefault(); dragDepth++; $("#drop").hidden = false; });
  window.addEventListener("dragleave", function (ev) { ev.preventDefault(); if (--dragDepth <= 0) { dragDepth = 0; $("#drop").hidden = true; } });
  window.addEventListener("dragover", function (ev) { ev.preventDefault(); });
  window.addEventListener("drop", function (ev) {
    ev.preventDefault(); dragDepth = 0; $("#drop").hidden = true;
    if (ev.dataTransfer && ev.dataTransfer.files.length) upload(ev.dataTransfer.files[0]);
  });
  window.addEventListener("hashchange", route);

  api("/api/info").then(function (info) { $("#source").textContent = info.label + " · " + info.runs + " runs"; }).catch(function () {});
  route();

  window.rlmViewer = { state: state, focusNode: focusNode, upload: upload };
})();
