// The miso-mapper map viewer: one drawn layer at a time over the run's chunk-status overlay.
// Reads /layers.json, draws /tiles/<layer>/{z}/{x}/{y}.png, asks /point for the values under a click and
// /chunks.geojson for the chunk status. URL parameters: layer, lat, lon, zoom, opacity (0..1), chunks (0/1),
// click (lat,lon: show the values there, as a click does).
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.search);
  var STATUS_COLOURS = { done: "#1a9850", failed: "#d73027", pending: "#999999" };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function legend(layer) {
    var box = document.getElementById("legend");
    box.innerHTML = "";
    box.appendChild(el("div", { "class": "legend-title" }, layer.title));
    var lg = layer.legend;
    if (lg.kind === "classes") {
      lg.entries.forEach(function (e) {
        var row = el("div", { "class": "legend-row" });
        var sw = el("span", { "class": "swatch" });
        sw.style.background = e.colour;
        row.appendChild(sw);
        row.appendChild(el("span", {}, e.label));
        box.appendChild(row);
      });
    } else {
      var bar = el("div", { "class": "ramp" });
      bar.style.background = "linear-gradient(to right, " + lg.stops.join(", ") + ")";
      box.appendChild(bar);
      var ends = el("div", { "class": "ramp-ends" });
      ends.appendChild(el("span", {}, String(lg.min)));
      ends.appendChild(el("span", {}, String(lg.max)));
      box.appendChild(ends);
    }
  }

  function showValues(data) {
    var box = document.getElementById("values");
    box.innerHTML = "";
    var names = Object.keys(data.values);
    if (!names.length) { box.textContent = "no map here"; return; }
    var table = el("table");
    names.forEach(function (name) {
      var v = data.values[name];
      v.bands.forEach(function (band, i) {
        var row = el("tr");
        row.appendChild(el("td", {}, v.bands.length > 1 ? name + " · " + band : name));
        var shown = v.value[i] === null ? "no data" : String(v.value[i]);
        row.appendChild(el("td", {}, shown + " (" + v.stored[i] + ")"));
        table.appendChild(row);
      });
    });
    box.appendChild(el("div", {}, data.lat.toFixed(5) + ", " + data.lon.toFixed(5)));
    box.appendChild(table);
  }

  function start(info) {
    var layers = info.layers.filter(function (l) { return l.drawn; });
    var map = L.map("map", { zoomControl: true, attributionControl: false });
    var b = info.bounds;  // [west, south, east, north]
    if (params.has("lat") && params.has("lon")) {
      map.setView([+params.get("lat"), +params.get("lon")], +(params.get("zoom") || 12));
    } else {
      map.fitBounds([[b[1], b[0]], [b[3], b[2]]]);
    }
    var opacity = params.has("opacity") ? +params.get("opacity") : 0.85;
    var slider = document.getElementById("opacity");
    slider.value = String(opacity);
    var select = document.getElementById("layer");
    layers.forEach(function (l) { select.appendChild(el("option", { value: l.name }, l.title)); });
    var current = null;
    function choose(name) {
      var layer = layers.filter(function (l) { return l.name === name; })[0] || layers[0];
      if (current) { map.removeLayer(current); }
      document.body.dataset.tiles = "loading";
      current = L.tileLayer("tiles/" + layer.name + "/{z}/{x}/{y}.png", { opacity: +slider.value, maxZoom: 20 });
      current.on("load", function () { document.body.dataset.tiles = "loaded"; });
      current.addTo(map);
      select.value = layer.name;
      legend(layer);
    }
    select.addEventListener("change", function () { choose(select.value); });
    slider.addEventListener("input", function () { if (current) { current.setOpacity(+slider.value); } });
    choose(params.get("layer") || (layers[0] && layers[0].name));

    fetch("chunks.geojson").then(function (r) { return r.json(); }).then(function (gj) {
      var overlay = L.geoJSON(gj, {
        style: function (f) {
          var c = STATUS_COLOURS[f.properties.status] || "#999999";
          return { color: c, weight: 1, fill: f.properties.status !== "done", fillColor: c, fillOpacity: 0.25 };
        },
        interactive: false
      });
      var box = document.getElementById("chunks");
      box.checked = params.get("chunks") !== "0";
      if (box.checked) { overlay.addTo(map); }
      box.addEventListener("change", function () {
        if (box.checked) { overlay.addTo(map); } else { map.removeLayer(overlay); }
      });
      document.getElementById("chunk-counts").textContent = Object.keys(STATUS_COLOURS).map(function (s) {
        return gj.features.filter(function (f) { return f.properties.status === s; }).length + " " + s;
      }).join(", ");
    });

    var marker = null;
    function inspect(latlng) {
      var url = "point?lat=" + latlng.lat + "&lon=" + latlng.lng;
      fetch(url).then(function (r) { return r.json(); }).then(function (data) {
        if (marker) { map.removeLayer(marker); }
        marker = L.circleMarker(latlng, { radius: 5, color: "#000" }).addTo(map);
        showValues(data);
      });
    }
    map.on("click", function (e) { inspect(e.latlng); });
    if (params.has("click")) {  // a shared link: the values at "lat,lon"
      var at = params.get("click").split(",");
      inspect(L.latLng(+at[0], +at[1]));
    }
    window.misoMap = map;
  }

  fetch("layers.json").then(function (r) { return r.json(); }).then(start);
})();
