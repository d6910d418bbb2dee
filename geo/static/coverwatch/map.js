/* coverwatch map: builds the layers from the compact payload of geo/maps.py.
 *
 * Payload layout (arrays keep a 10,000-village province small):
 *   meta      {since, until, radius_km, area, generated, unplaced_probes}
 *   classes   ["good", "fair", "poor", "none", "unmeasured"]     (indexes below)
 *   states    ["online", "offline", "stale", "unknown"]           (probe status)
 *   ops       operator names; places: "commune, district" strings
 *   villages  [lat, lon, name, place, population, class, nearest probe, nearest km,
 *              speaking probe, [[op, class, availability %, median signal dBm, readings]],
 *              [[operator name, technologies, best signal dBm, probes]] heard by a network
 *              scan of nearby probes but measured by none: evidence, never a class]
 *   probes    [id, lat, lon, state, last seen, class, measured %, rtt ms, loss %,
 *              outages, outage h, last outage start, last outage end, village]
 *   zones     GeoJSON features {state: covered|dead|unmeasured, km2}
 *   boundaries GeoJSON features {l: level, n: name}
 *   survey_ops operator names of survey points
 *   survey    [lat, lon, time, survey op, technology, class, signal dBm, accuracy m,
 *              no service (1/0)]: walk/drive-test points, evidence apart from probes
 *   evidence_kinds ["probe", "survey", "predicted", "unknown"]   (only with evidence)
 *   evidence  per village, in the villages' order: [kind, p(no service), no service
 *              (1/0), [[operator name, kind, p(usable), predicted dBm, sigma dB]]]
 *              — a predicted verdict is drawn and written as predicted, never as measured
 *   sites     (only when asked for) recommended tower sites: [lat, lon, rank, candidate
 *              id, operator name, expected people newly served, [[village, people]]]
 */
(function () {
  "use strict";

  var COLOURS = {
    good: "#1a9641",
    fair: "#a6d96a",
    poor: "#fdae61",
    none: "#d7191c",
    unmeasured: "#8c8c8c"
  };
  var LABELS = {
    good: "good",
    fair: "fair",
    poor: "poor (one bar)",
    none: "no service",
    unmeasured: "unmeasured"
  };
  var ZONES = {
    covered: {
      label: "Covered areas",
      style: { color: "#1a9641", weight: 0, fillColor: "#1a9641", fillOpacity: 0.12 }
    },
    unmeasured: {
      label: "Unmeasured areas (no probe: not dead)",
      style: {
        color: "#666", weight: 1, dashArray: "4 4", fillColor: "#bdbdbd", fillOpacity: 0.18
      }
    },
    dead: {
      label: "Dead zones (measured: no service)",
      style: { color: "#a50f15", weight: 1.5, fillColor: "#d7191c", fillOpacity: 0.35 }
    }
  };

  function esc(value) {
    return String(value).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function num(value, digits, unit) {
    if (value === null || value === undefined) { return "–"; }
    return value.toFixed(digits) + (unit || "");
  }

  function row(cells, tag) {
    return "<tr>" + cells.map(function (c) {
      return "<" + tag + ">" + c + "</" + tag + ">";
    }).join("") + "</tr>";
  }

  function swatch(cls) {
    return '<i class="cw-swatch cw-' + cls + '"></i>';
  }

  window.coverwatchMap = function (map, control, d) {
    var classes = d.classes;
    var worstOrder = ["none", "poor", "fair", "good", "unmeasured"];

    // Without tiles nothing sets a zoom range, and marker clustering needs one.
    if (!map.options.maxZoom) { map.setMaxZoom(18); }
    map.createPane("cwZones").style.zIndex = 350;
    map.createPane("cwBoundaries").style.zIndex = 360;

    // ---------------------------------------------------------------- boundaries, zones
    if (d.boundaries.length) {
      var boundaries = L.geoJSON(d.boundaries, {
        pane: "cwBoundaries",
        style: function (f) {
          return f.properties.l === "province"
            ? { color: "#222", weight: 2.5, fill: false }
            : { color: "#555", weight: 0.8, dashArray: "3 3", fill: false };
        },
        onEachFeature: function (f, layer) {
          layer.bindTooltip(esc(f.properties.n) + " (" + esc(f.properties.l) + ")", {
            sticky: true
          });
        }
      }).addTo(map);
      control.addOverlay(boundaries, "Boundaries");
    }
    d.zones.forEach(function (f) {
      var kind = ZONES[f.properties.state];
      var layer = L.geoJSON(f, { pane: "cwZones", style: kind.style });
      layer.bindTooltip(kind.label + ": " + num(f.properties.km2, 1, " km²"), { sticky: true });
      layer.addTo(map);
      control.addOverlay(layer, kind.label);
    });

    // ------------------------------------------------------------------------ probes
    function probePopup(p) {
      var state = d.states[p[3]];
      var html = "<b>probe " + esc(p[0]) + "</b>" + (p[13] ? " · " + esc(p[13]) : "") +
        "<table>" +
        row(["status", '<span class="cw-state cw-state-' + state + '">' + state + "</span>"], "td") +
        row(["last seen", p[4] ? esc(p[4]) : "never"], "td") +
        row(["coverage", swatch(classes[p[5]]) + LABELS[classes[p[5]]]], "td") +
        row(["measured", num(p[6], 1, " %")], "td") +
        row(["latency (median)", num(p[7], 0, " ms")], "td") +
        row(["loss", num(p[8], 1, " %")], "td") +
        row(["power outages", p[9] + (p[9] ? " (" + num(p[10], 1, " h") + ")" : "")], "td") +
        "</table>";
      return html;
    }
    var probes = L.featureGroup();
    var outages = L.featureGroup();
    d.probes.forEach(function (p) {
      var state = d.states[p[3]];
      var marker = L.marker([p[1], p[2]], {
        icon: L.divIcon({ className: "cw-probe cw-probe-" + state, iconSize: [11, 11] }),
        title: "probe " + p[0] + " (" + state + ")",
        zIndexOffset: 1000
      });
      marker.bindPopup(function () { return probePopup(p); });
      probes.addLayer(marker);
      if (p[9] > 0) {
        var bolt = L.marker([p[1], p[2]], {
          icon: L.divIcon({ className: "cw-outage", html: "⚡", iconSize: [16, 16],
                            iconAnchor: [-4, 20] }),
          title: p[9] + " power outage(s) at " + p[0]
        });
        bolt.bindPopup(function () {
          return "<b>power outages at " + esc(p[0]) + "</b><table>" +
            row(["in window", String(p[9])], "td") +
            row(["hours without power", num(p[10], 1, " h")], "td") +
            row(["last", esc(p[11]) + " – " + esc(p[12])], "td") + "</table>";
        });
        outages.addLayer(bolt);
      }
    });
    probes.addTo(map);
    control.addOverlay(probes, "Probes (status)");

    // ------------------------------------------------------------------ survey points
    // Measured by a survey (a phone walked or driven there), never by a probe: drawn as
    // small diamonds apart from the villages' circles, with their own popup.
    if (d.survey && d.survey.length) {
      var surveyLayer = L.featureGroup();
      d.survey.forEach(function (s) {
        var cls = classes[s[5]];
        var marker = L.marker([s[0], s[1]], {
          icon: L.divIcon({ className: "cw-survey cw-" + cls, iconSize: [9, 9] }),
          title: "survey point (" + LABELS[cls] + ")"
        });
        marker.bindPopup(function () {
          return "<b>survey point</b> (walk/drive test, not a probe)<table>" +
            row(["time", esc(s[2])], "td") +
            row(["operator", esc(d.survey_ops[s[3]]) + (s[4] ? " " + esc(s[4]) : "")], "td") +
            row(["service", s[8] ? "none: no service here" : swatch(cls) + LABELS[cls]], "td") +
            row(["signal", num(s[6], 0, " dBm")], "td") +
            row(["GPS accuracy", num(s[7], 0, " m")], "td") + "</table>";
        });
        surveyLayer.addLayer(marker);
      });
      surveyLayer.addTo(map);
      control.addOverlay(surveyLayer, "Survey points (walk tests)");
    }
    outages.addTo(map);
    control.addOverlay(outages, "Power outages");

    // ---------------------------------------------------------------------- villages
    d.villages.forEach(function (v, index) { v.cwIndex = index; });
    var KIND_TEXT = {
      probe: "measured by a probe",
      survey: "measured by a survey",
      predicted: "predicted",
      unknown: "unknown: no evidence"
    };

    function evidenceHtml(e) {
      var kinds = d.evidence_kinds;
      var kind = kinds[e[0]];
      var verdict = kind === "unknown" ? "unknown" :
        (e[2] ? "no service" : (kind === "predicted" && e[1] >= 0.2 ? "uncertain" : "service"));
      var html = '<div class="cw-evidence"><b>Verdict: ' + verdict + "</b> (" +
        KIND_TEXT[kind] + (kind === "predicted" && e[1] !== null ?
          ", p(no service) " + num(e[1], 2, "") : "") + ")<br>";
      e[3].forEach(function (o) {
        var k = kinds[o[1]];
        html += esc(o[0]) + ": " + (k === "predicted" ?
          "predicted p(usable) " + num(o[2], 2, "") + ", " + num(o[3], 0, "") + " ± " +
            num(o[4], 0, " dBm") :
          (k === "unknown" ? "unknown" : k + " " + (o[2] === 1 ? "usable" : "none"))) + "<br>";
      });
      return html + "</div>";
    }

    function evidenceClass(e) {
      var kind = d.evidence_kinds[e[0]];
      if (kind === "unknown") { return "unmeasured"; }
      if (kind !== "predicted") { return e[2] ? "none" : "good"; }
      return e[2] ? "none" : (e[1] >= 0.2 ? "poor" : "fair");
    }

    function villagePopup(v, op) {
      var place = d.places[v[3]];
      var html = "<b>" + esc(v[2]) + "</b>" + (place ? "<br>" + esc(place) : "") +
        (v[4] !== null ? " · pop. " + v[4] : "") + "<table>" +
        row(["operator", "class", "avail.", "signal", "readings"], "th");
      v[9].forEach(function (o) {
        var cls = classes[o[1]];
        var text = '<tr class="' + (op === o[0] ? "cw-sel" : "") + '">' +
          "<td>" + esc(d.ops[o[0]]) + "</td><td>" + swatch(cls) + LABELS[cls] + "</td>" +
          "<td>" + num(o[2], 1, " %") + "</td><td>" + num(o[3], 0, " dBm") + "</td>" +
          "<td>" + (o[4] === null ? "–" : o[4]) + "</td></tr>";
        html += text;
      });
      if (!v[9].length) {
        html += '<tr><td colspan="5">no probe within ' + d.meta.radius_km +
          " km measured here: unmeasured, not dead</td></tr>";
      }
      html += "</table>";
      if (v[10] && v[10].length) {
        html += '<div class="cw-scan">heard by a network scan, not measured: ' +
          v[10].map(function (e) {
            return "<b>" + esc(e[0]) + "</b>" + (e[1] ? " " + esc(e[1]) : "") +
              (e[2] === null ? "" : " " + num(e[2], 0, " dBm")) +
              " (" + e[3] + " probe" + (e[3] === 1 ? "" : "s") + ")";
          }).join(", ") + "</div>";
      }
      if (d.evidence) { html += evidenceHtml(d.evidence[v.cwIndex]); }
      var near = v[6] >= 0 ? d.probes[v[6]] : null;
      var speaking = v[8] >= 0 ? d.probes[v[8]] : null;
      if (near) { html += "nearest probe " + esc(near[0]) + " (" + num(v[7], 1, " km") + ")"; }
      if (speaking) {
        html += "<br>latency " + num(speaking[7], 0, " ms") + " · loss " +
          num(speaking[8], 1, " %") + " · measured " + num(speaking[6], 0, " %") +
          " (" + esc(speaking[0]) + ")";
      }
      return html;
    }

    function classOf(v, op) {
      if (op === null) { return classes[v[5]]; }
      for (var i = 0; i < v[9].length; i++) {
        if (v[9][i][0] === op) { return classes[v[9][i][1]]; }
      }
      return "unmeasured";
    }

    function clusterIcon(cluster) {
      var children = cluster.getAllChildMarkers();
      var worst = "unmeasured";
      var dead = 0;
      children.forEach(function (m) {
        var cls = m.options.cwClass;
        if (cls === "none") { dead++; }
        if (worstOrder.indexOf(cls) < worstOrder.indexOf(worst)) { worst = cls; }
      });
      var label = children.length + (dead ? '<small>' + dead + " ✕</small>" : "");
      return L.divIcon({
        html: "<div><span>" + label + "</span></div>",
        className: "marker-cluster cw-cluster cw-" + worst,
        iconSize: L.point(40, 40)
      });
    }

    function villageView(op) {
      var group = L.markerClusterGroup({
        chunkedLoading: true,
        showCoverageOnHover: false,
        maxClusterRadius: 45,
        disableClusteringAtZoom: 14,
        iconCreateFunction: clusterIcon
      });
      var built = false;
      group.on("add", function () {
        if (built) { return; }
        built = true;
        var markers = d.villages.map(function (v) {
          var cls = classOf(v, op);
          var measured = cls !== "unmeasured";
          var marker = L.circleMarker([v[0], v[1]], {
            radius: 6,
            color: measured ? "#333" : COLOURS.unmeasured,
            weight: measured ? 1 : 1.5,
            dashArray: measured ? null : "2 2",
            fillColor: COLOURS[cls],
            fillOpacity: measured ? 0.9 : 0.15,
            cwClass: cls
          });
          marker.bindPopup(function () { return villagePopup(v, op); }, { maxWidth: 360 });
          marker.bindTooltip(esc(v[2]));
          return marker;
        });
        group.addLayers(markers);
      });
      return group;
    }

    // Every village's verdict and what it rests on: measured ones solid, predicted ones
    // a dashed ring filled by how likely no service is, unknown ones hollow.
    function evidenceCluster(cluster) {
      var children = cluster.getAllChildMarkers();
      var measured = 0;
      var predicted = 0;
      children.forEach(function (m) {
        if (m.options.cwDead === "measured") { measured++; }
        if (m.options.cwDead === "predicted") { predicted++; }
      });
      var label = children.length + (measured ? "<small>" + measured + " ✕</small>" : "") +
        (predicted ? "<small>" + predicted + " ?</small>" : "");
      var worst = measured ? "none" : (predicted ? "poor" : "fair");
      return L.divIcon({
        html: "<div><span>" + label + "</span></div>",
        className: "marker-cluster cw-cluster cw-" + worst,
        iconSize: L.point(40, 40)
      });
    }

    function evidenceView() {
      var group = L.markerClusterGroup({
        chunkedLoading: true,
        showCoverageOnHover: false,
        maxClusterRadius: 45,
        disableClusteringAtZoom: 14,
        iconCreateFunction: evidenceCluster
      });
      var built = false;
      group.on("add", function () {
        if (built) { return; }
        built = true;
        group.addLayers(d.villages.map(function (v) {
          var e = d.evidence[v.cwIndex];
          var kind = d.evidence_kinds[e[0]];
          var cls = evidenceClass(e);
          var predicted = kind === "predicted";
          var marker = L.circleMarker([v[0], v[1]], {
            radius: 6,
            color: predicted ? COLOURS[cls] : (kind === "unknown" ? COLOURS.unmeasured : "#333"),
            weight: predicted ? 2.5 : 1,
            dashArray: predicted || kind === "unknown" ? "3 3" : null,
            fillColor: COLOURS[cls],
            fillOpacity: kind === "unknown" ? 0.1 : (predicted ? 0.35 : 0.9),
            className: "cw-ev-" + kind,
            cwDead: e[2] ? (predicted ? "predicted" : "measured") : ""
          });
          marker.bindPopup(function () { return villagePopup(v, null); }, { maxWidth: 380 });
          marker.bindTooltip(esc(v[2]) + " (" + KIND_TEXT[kind] + ")");
          return marker;
        }));
      });
      return group;
    }

    var best = villageView(null);
    control.addBaseLayer(best, "Villages: best operator");
    d.ops.forEach(function (name, index) {
      control.addBaseLayer(villageView(index), "Villages: " + name);
    });
    if (d.evidence) {
      var evidence = evidenceView();
      control.addBaseLayer(evidence, "Villages: evidence (measured / predicted)");
      evidence.addTo(map);  // asked for: shown first
    } else {
      best.addTo(map);
    }

    // ------------------------------------------------------------------ tower sites
    // Where a new mast would serve the most people without service (geo/sites.py): a
    // proposal, drawn apart from everything measured.
    if (d.sites) {
      var sitesLayer = L.featureGroup();
      d.sites.forEach(function (s) {
        var marker = L.marker([s[0], s[1]], {
          icon: L.divIcon({
            className: "cw-site",
            html: "<span>" + s[2] + "</span>",
            iconSize: [22, 22]
          }),
          title: "proposed site " + s[2] + " (" + s[4] + ")",
          zIndexOffset: 1000
        });
        marker.bindPopup(function () {
          return "<b>Proposed " + esc(s[4]) + " site #" + s[2] + "</b> (" + esc(s[3]) +
            ")<br>expected to serve " + s[5] + " people without service now:<br>" +
            s[6].map(function (v) { return esc(v[0]) + " (" + v[1] + ")"; }).join(", ");
        }, { maxWidth: 360 });
        sitesLayer.addLayer(marker);
      });
      sitesLayer.addTo(map);
      control.addOverlay(sitesLayer, "Proposed tower sites" +
        (d.sites.length ? " (" + d.sites[0][4] + ")" : ""));
    }

    // ------------------------------------------------------------------------ legend
    var legend = L.control({ position: "bottomleft" });
    legend.onAdd = function () {
      var div = L.DomUtil.create("div", "cw-legend");
      var m = d.meta;
      var html = "<b>Coverage of villages</b><br>";
      classes.forEach(function (cls) { html += swatch(cls) + LABELS[cls] + "<br>"; });
      html += "<b>Areas</b> (" + esc(m.area) + ", " + m.radius_km + " km per probe)<br>";
      ["dead", "unmeasured", "covered"].forEach(function (state) {
        html += '<i class="cw-zone cw-zone-' + state + '"></i>' + ZONES[state].label + "<br>";
      });
      html += "<b>Probes</b><br>";
      d.states.forEach(function (state) {
        html += '<i class="cw-probe cw-probe-' + state + ' cw-inline"></i>' + state + " ";
      });
      if (d.survey && d.survey.length) {
        html += '<br><i class="cw-survey cw-fair cw-inline"></i> survey point (walk test)';
      }
      if (d.sites) {
        html += '<br><i class="cw-site cw-inline"></i> proposed tower site (a plan, not a mast)';
      }
      if (d.evidence) {
        html += "<br><b>Evidence view</b><br>" +
          '<i class="cw-ev-key cw-ev-measured"></i>measured (probe or survey)<br>' +
          '<i class="cw-ev-key cw-ev-predicted"></i>predicted: red p(no service) ≥ 0.8, ' +
          "orange uncertain, green likely served<br>" +
          '<i class="cw-ev-key cw-ev-unknown"></i>unknown: no evidence, not dead';
      }
      html += '<br><span class="cw-outage cw-inline">⚡</span> power outage in window<br>' +
        '<span class="cw-meta">readings ' + esc(m.since) + " – " + esc(m.until) +
        "<br>" + d.villages.length + " villages, " + d.probes.length + " probes" +
        (m.unplaced_probes ? " (+" + m.unplaced_probes + " without position)" : "") +
        "</span>";
      div.innerHTML = html;
      L.DomEvent.disableClickPropagation(div);
      return div;
    };
    legend.addTo(map);
  };
})();
