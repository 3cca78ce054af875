
(function () {
  "use strict";
  var doc = document;
  doc.documentElement.className += " js";
  var table = doc.getElementById("samples");
  if (!table || !table.tBodies.length) { return; }
  var tbody = table.tBodies[0];
  var items = Array.prototype.map.call(tbody.rows, function (row, pos) {
    var ctypes = [];
    try { ctypes = JSON.parse(row.getAttribute("data-ctypes") || "[]"); } catch (err) { ctypes = []; }
    var score = parseFloat(row.getAttribute("data-score"));
    var index = parseFloat(row.getAttribute("data-index"));
    return {
      row: row, pos: pos,
      index: isFinite(index) ? index : pos,
      score: isFinite(score) ? score : null,
      type: row.getAttribute("data-type") || "",
      status: row.getAttribute("data-status") || "",
      ctypes: Array.isArray(ctypes) ? ctypes : [],
      text: (row.textContent || "").toLowerCase()
    };
  });
  var fType = doc.getElementById("f-type");
  var fCtype = doc.getElementById("f-ctype");
  var fStatus = doc.getElementById("f-status");
  var fQ = doc.getElementById("f-q");
  var fReset = doc.getElementById("f-reset");
  var fCount = doc.getElementById("f-count");
  var controls = doc.getElementById("controls");
  var fProtocol = doc.getElementById("f-protocol");

  // Several protocols: each row holds every protocol's score, status and
  // judge reply (div.pv); the switch shows one and sorts/filters by it.
  function showProtocol(name) {
    items.forEach(function (it) {
      Array.prototype.forEach.call(it.row.querySelectorAll("div.pv"), function (pv) {
        var on = pv.getAttribute("data-protocol") === name;
        pv.hidden = !on;
        if (on && pv.parentNode && pv.parentNode.className === "score") {
          var score = parseFloat(pv.getAttribute("data-score"));
          it.score = isFinite(score) ? score : null;
          it.status = pv.getAttribute("data-status") || "";
        }
      });
    });
  }

  function apply() {
    var t = fType ? fType.value : "", c = fCtype ? fCtype.value : "", s = fStatus ? fStatus.value : "";
    var q = fQ ? fQ.value.trim().toLowerCase() : "";
    var shown = 0;
    items.forEach(function (it) {
      var ok = (!t || it.type === t) && (!s || it.status === s) &&
        (!c || it.ctypes.indexOf(c) >= 0) && (!q || it.text.indexOf(q) >= 0);
      it.row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    if (fCount) { fCount.textContent = shown + " of " + items.length + " samples shown"; }
  }
  [fType, fCtype, fStatus].forEach(function (el) { if (el) { el.addEventListener("change", apply); } });
  if (fProtocol) {
    fProtocol.addEventListener("change", function () {
      showProtocol(fProtocol.value);
      apply();
      if (state.key) { sortBy(state.key, state.dir); }
    });
  }
  if (fQ) { fQ.addEventListener("input", apply); }
  if (fReset) {
    fReset.addEventListener("click", function () {
      [fType, fCtype, fStatus, fQ].forEach(function (el) { if (el) { el.value = ""; } });
      apply();
    });
  }
  if (controls) { controls.hidden = false; }
  apply();

  var state = {key: null, dir: 1};
  function value(it, key) {
    if (key === "score") { return it.score; }
    if (key === "type") { return it.type; }
    if (key === "status") { return it.status; }
    return it.index;
  }
  function sortBy(key, dir) {
    var sorted = items.slice().sort(function (a, b) {
      var va = value(a, key), vb = value(b, key);
      if (va === null && vb === null) { return a.pos - b.pos; }
      if (va === null) { return 1; }
      if (vb === null) { return -1; }
      if (va < vb) { return -dir; }
      if (va > vb) { return dir; }
      return a.pos - b.pos;
    });
    var frag = doc.createDocumentFragment();
    sorted.forEach(function (it) { frag.appendChild(it.row); });
    tbody.appendChild(frag);
  }
  Array.prototype.forEach.call(table.querySelectorAll("button.sort"), function (btn) {
    btn.addEventListener("click", function () {
      var key = btn.getAttribute("data-sort") || "index";
      state.dir = state.key === key ? -state.dir : (key === "score" ? -1 : 1);
      state.key = key;
      sortBy(key, state.dir);
      Array.prototype.forEach.call(table.querySelectorAll("th[aria-sort]"), function (th) {
        th.setAttribute("aria-sort", "none");
      });
      var th = btn.parentNode;
      if (th) { th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending"); }
    });
  });

  function reveal() {
    var id = decodeURIComponent((location.hash || "").slice(1));
    var row = id ? doc.getElementById(id) : null;
    if (row && row.hidden && fReset) { fReset.click(); row.scrollIntoView(); }
  }
  window.addEventListener("hashchange", reveal);
  doc.addEventListener("keydown", function (ev) {
    if (ev.key !== "Escape") { return; }
    Array.prototype.forEach.call(doc.querySelectorAll("details.lb[open]"), function (d) { d.open = false; });
  });
  doc.addEventListener("toggle", function (ev) {
    var d = ev.target;
    if (!d || !d.open || !d.classList || !d.classList.contains("lb")) { return; }
    Array.prototype.forEach.call(doc.querySelectorAll("details.lb[open]"), function (o) {
      if (o !== d) { o.open = false; }
    });
  }, true);
})();
