/* fantasy_kg graph view: draws the inlined graph with cytoscape.js and wires search, filters,
   the story-time slider and the details panel. Every text from the books or the model is put
   into the page with textContent, never as HTML. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("fkg-data").textContent);
  var INF = Number.MAX_SAFE_INTEGER;
  var POS = 10000000;
  var big = data.nodes.length > 800 || data.edges.length > 3000;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  // --- header -------------------------------------------------------------------------------
  document.getElementById("title").textContent = data.series;
  var madeBy = document.getElementById("made-by");
  madeBy.textContent = "made by " + data.made_by + (data.models.length ? " · model " + data.models.join(", ") : "");
  if (data.local) madeBy.className = "local";

  // --- elements -----------------------------------------------------------------------------
  var etColor = {}, rtColor = {}, rtDirected = {};
  data.entity_types.forEach(function (t) { etColor[t.name] = t.color; });
  data.relationship_types.forEach(function (t) { rtColor[t.name] = t.color; rtDirected[t.name] = t.directed; });
  var maxMentions = 1, maxEvidence = 1;
  data.nodes.forEach(function (n) { maxMentions = Math.max(maxMentions, n.mentions); });
  data.edges.forEach(function (e) { maxEvidence = Math.max(maxEvidence, e.evidence_count); });
  var byId = {};
  var elements = [];
  data.nodes.forEach(function (n) {
    byId[n.id] = n;
    elements.push({ group: "nodes", data: {
      id: n.id, label: n.name, color: etColor[n.type] || "#888",
      size: 12 + 38 * Math.sqrt(n.mentions / maxMentions) }, position: { x: n.x, y: n.y } });
  });
  var edgeById = {};
  data.edges.forEach(function (e) {
    edgeById[e.id] = e;
    elements.push({ group: "edges", data: {
      id: e.id, source: e.source, target: e.target, color: rtColor[e.type] || "#999",
      width: 1 + 5 * Math.log(1 + e.evidence_count) / Math.log(1 + maxEvidence),
      arrow: e.directed ? "triangle" : "none" } });
  });

  var cy = cytoscape({
    container: document.getElementById("cy"),
    elements: elements,
    layout: { name: "preset", fit: true, padding: 30 },
    wheelSensitivity: 0.3,
    minZoom: 0.02, maxZoom: 6,
    textureOnViewport: big, hideEdgesOnViewport: big, motionBlur: false,
    pixelRatio: big ? 1 : "auto",
    style: [
      { selector: "node", style: {
        "background-color": "data(color)", width: "data(size)", height: "data(size)",
        label: "data(label)", "font-size": 11, "min-zoomed-font-size": big ? 9 : 6,
        "text-valign": "bottom", "text-margin-y": 2, color: "#1d2330",
        "text-outline-color": "#f6f5f1", "text-outline-width": 2, "border-width": 0 } },
      { selector: "edge", style: {
        "line-color": "data(color)", "target-arrow-color": "data(color)",
        "target-arrow-shape": "data(arrow)", width: "data(width)", opacity: 0.7,
        "curve-style": big ? "haystack" : "bezier", "arrow-scale": 0.8 } },
      { selector: ".hidden", style: { display: "none" } },
      { selector: "node:selected", style: { "border-width": 4, "border-color": "#1d2330" } },
      { selector: "edge:selected", style: { opacity: 1, width: 6, "line-color": "#1d2330", "target-arrow-color": "#1d2330" } },
      { selector: ".faded", style: { opacity: 0.12 } }
    ]
  });
  // Haystack edges cannot carry arrows; big graphs trade arrowheads for speed unless zoomed.
  window.fkgCy = cy;

  // --- filters and story time -----------------------------------------------------------------
  var shownEt = {}, shownRt = {};
  data.entity_types.forEach(function (t) { shownEt[t.name] = true; });
  data.relationship_types.forEach(function (t) { shownRt[t.name] = true; });
  var points = data.points;
  var slider = document.getElementById("asof");
  slider.max = String(points.length);   // the last step shows everything
  slider.value = String(points.length);
  var cut = INF;

  function cutLabel() {
    var i = Number(slider.value);
    return i >= points.length ? "Everything (" + (data.as_of_book ? "up to book " + data.as_of_book : "all books") + ")" : "As of " + points[i].label;
  }
  function known(pos) { return pos !== null && pos !== undefined ? pos <= cut : cut === INF; }
  function nodeShown(n) { return shownEt[n.type] && known(n.pos); }
  function edgeShown(e) {
    return shownRt[e.type] && known(e.pos) && nodeShown(byId[e.source]) && nodeShown(byId[e.target]);
  }
  function apply() {
    var i = Number(slider.value);
    cut = i >= points.length ? INF : points[i].pos;
    document.getElementById("asof-label").textContent = cutLabel();
    // Restyle only the elements whose state changes: a step of the slider touches a few, and
    // restyling all 12,000 elements of a large series on every step is what made it stutter.
    var nodes = 0, edges = 0;
    cy.batch(function () {
      cy.nodes().forEach(function (node) {
        var show = nodeShown(byId[node.id()]);
        if (show) nodes++;
        setHidden(node, !show);
      });
      cy.edges().forEach(function (edge) {
        var show = edgeShown(edgeById[edge.id()]);
        if (show) edges++;
        setHidden(edge, !show);
      });
    });
    document.getElementById("counts").textContent = nodes + " entities · " + edges + " relationships";
    var sel = cy.$(":selected");
    if (sel.length && sel.hasClass("hidden")) { sel.unselect(); showEmpty(); }
    else if (sel.length) showDetails(sel[0]);
    runSearch();
  }
  var hiddenNow = {};
  function setHidden(ele, hide) {
    var id = ele.id();
    if ((hiddenNow[id] || false) !== hide) {
      hiddenNow[id] = hide;
      ele.toggleClass("hidden", hide);
    }
  }
  // At most one apply per frame while the slider is dragged.
  var queued = false;
  slider.addEventListener("input", function () {
    if (queued) return;
    queued = true;
    requestAnimationFrame(function () { queued = false; apply(); });
  });
  // What the renderer draws is decided by the computed display style (an edge also needs both
  // ends). Read it directly: ":visible" and ele.visible() can return a cached, older answer.
  function shown(e) {
    if (e.style("display") === "none") return false;
    return e.isNode() || (shown(e.source()) && shown(e.target()));
  }
  function drawn(eles) { var n = 0; eles.forEach(function (e) { if (shown(e)) n++; }); return n; }

  function filterList(containerId, types, shown, line) {
    var box = document.getElementById(containerId);
    types.forEach(function (t) {
      var label = el("label");
      var box2 = el("input", { type: "checkbox" }); box2.checked = true;
      box2.setAttribute("data-type", t.name);
      box2.addEventListener("change", function () { shown[t.name] = box2.checked; apply(); });
      var sw = el("span", { "class": "swatch" + (line ? " line" : "") }); sw.style.background = t.color;
      label.appendChild(box2); label.appendChild(sw);
      label.appendChild(el("span", null, t.name + (line && t.directed ? " →" : "")));
      label.appendChild(el("span", { "class": "n" }, t.count));
      box.appendChild(label);
    });
  }
  filterList("etypes", data.entity_types, shownEt, false);
  filterList("rtypes", data.relationship_types, shownRt, true);

  // --- details ----------------------------------------------------------------------------------
  var details = document.getElementById("details");
  function showEmpty() { clear(details); details.appendChild(el("p", { id: "empty" }, "Click a node or an edge to see what the books say.")); }
  function cutBook() { return cut === INF ? INF : Math.floor(cut / POS); }
  function row(dl, k, v) { dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", null, v)); }
  function link(text, fn) { var a = el("a", null, text); a.addEventListener("click", fn); return a; }

  function showNode(n) {
    clear(details);
    details.appendChild(el("h3", null, n.name));
    var dl = el("dl");
    row(dl, "type", n.type);
    var al = n.aliases.filter(function (a) { return a[1] === null || a[1] <= cutBook(); }).map(function (a) { return a[0]; });
    row(dl, "aliases", al.length ? al.join(", ") : "—");
    row(dl, "mentions", n.mentions);
    row(dl, "first seen", n.first);
    row(dl, "last seen", cut === INF ? n.last : "(hidden: later books)");
    details.appendChild(dl);
    var attrs = n.attributes.filter(function (a) { return a[2] === null || a[2] <= cutBook(); });
    details.appendChild(el("h2", null, "Attributes"));
    if (attrs.length) {
      var ul = el("ul");
      attrs.forEach(function (a) { ul.appendChild(el("li", null, a[0] + ": " + a[1])); });
      details.appendChild(ul);
    } else details.appendChild(el("p", { "class": "muted" }, "none recorded"));
    var rels = cy.getElementById(n.id).connectedEdges().filter(function (e) { return !e.hasClass("hidden"); });
    details.appendChild(el("h2", null, "Relationships (" + rels.length + ")"));
    var ul2 = el("ul", { id: "node-relationships" });
    rels.forEach(function (edge) {
      var e = edgeById[edge.id()];
      var li = el("li");
      li.appendChild(link(byId[e.source].name + " " + e.type + " " + byId[e.target].name, function () { select(e.id); }));
      li.appendChild(el("span", { "class": "muted" }, " · " + e.evidence_count + " quote" + (e.evidence_count === 1 ? "" : "s")));
      ul2.appendChild(li);
    });
    details.appendChild(ul2);
  }

  function showEdge(e) {
    clear(details);
    var h = el("h3");
    h.appendChild(link(byId[e.source].name, function () { select(e.source); }));
    h.appendChild(document.createTextNode(" " + e.type + (e.directed ? " → " : " — ")));
    h.appendChild(link(byId[e.target].name, function () { select(e.target); }));
    details.appendChild(h);
    if (e.description) details.appendChild(el("p", { "class": "muted" }, e.description));
    var quotes = e.evidence.filter(function (q) { return known(q.pos); });
    details.appendChild(el("h2", null, "Evidence (" + quotes.length + ")"));
    var box = el("div", { id: "evidence" });
    quotes.forEach(function (q) {
      var bq = el("blockquote", null, "“" + (q.quote || "") + "”");
      var meta = el("div", { "class": "quote-meta" });
      var st = el("span", { "class": "status " + q.status, title: q.score !== null ? "match score " + q.score : "" }, q.status);
      meta.appendChild(st);
      meta.appendChild(document.createTextNode(" " + q.book + " · " + q.chapter + " · section " + q.section));
      bq.appendChild(meta);
      box.appendChild(bq);
    });
    details.appendChild(box);
  }
  function showDetails(ele) { if (ele.isNode()) showNode(byId[ele.id()]); else showEdge(edgeById[ele.id()]); }
  function select(id) {
    var ele = cy.getElementById(id);
    if (!ele.length || ele.hasClass("hidden")) return false;
    cy.$(":selected").unselect();
    ele.select();
    showDetails(ele);
    cy.animate({ center: { eles: ele }, duration: 250 });
    return true;
  }
  cy.on("tap", "node, edge", function (evt) { showDetails(evt.target); });
  cy.on("tap", function (evt) { if (evt.target === cy) showEmpty(); });

  // --- search -------------------------------------------------------------------------------------
  var search = document.getElementById("search");
  var results = document.getElementById("results");
  function matches(q) {
    q = q.trim().toLowerCase();
    if (!q) return [];
    var out = [];
    for (var i = 0; i < data.nodes.length && out.length < 30; i++) {
      var n = data.nodes[i];
      if (!nodeShown(n)) continue;
      if (n.name.toLowerCase().indexOf(q) >= 0) { out.push({ node: n, via: null }); continue; }
      for (var j = 0; j < n.aliases.length; j++) {
        var a = n.aliases[j];
        if ((a[1] === null || a[1] <= cutBook()) && a[0].toLowerCase().indexOf(q) >= 0) { out.push({ node: n, via: a[0] }); break; }
      }
    }
    return out;
  }
  function runSearch() {
    clear(results);
    matches(search.value).forEach(function (m) {
      var li = el("li", { "data-id": m.node.id }, m.node.name);
      if (m.via) li.appendChild(el("span", { "class": "via" }, " (" + m.via + ")"));
      li.addEventListener("click", function () { select(m.node.id); });
      results.appendChild(li);
    });
  }
  search.addEventListener("input", runSearch);
  search.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && results.firstChild) select(results.firstChild.getAttribute("data-id"));
  });

  apply();
  // Hooks for tests and benchmarks: what is drawn, and a way to drive the controls.
  window.fkg = {
    data: data,
    drawnNodes: function () { return drawn(cy.nodes()); },
    drawnEdges: function () { return drawn(cy.edges()); },
    hiddenNodes: function () { return cy.nodes(".hidden").length; },
    isDrawn: function (id) { var e = cy.getElementById(id); return e.length > 0 && shown(e); },
    setPoint: function (i) { slider.value = String(i); apply(); },
    select: select,
    ready: false
  };
  cy.one("render", function () {
    requestAnimationFrame(function () { window.fkg.ready = true; window.fkgRendered = performance.now(); });
  });
  cy.forceRender();
})();
