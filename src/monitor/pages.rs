//! The HTML pages: `/` (links to every endpoint, as gnatsd's index) and `/live` (a page
//! that polls `/varz` every second and shows the rates). Plain HTML with a small inline
//! script: nothing is fetched from anywhere but this server.

/// `/`: gnatsd 1.0's index page without its images (which came from nats.io), plus the
/// endpoints ringnats adds.
pub const INDEX: &str = r#"<html lang="en">
  <head>
    <title>ringnats monitoring</title>
    <style type="text/css">
      body { font-family: "Century Gothic", CenturyGothic, AppleGothic, sans-serif; font-size: 22; }
      a { margin-left: 32px; }
    </style>
  </head>
  <body>
    <b>ringnats</b>
    <br/>
	<a href=/varz>varz</a><br/>
	<a href=/connz>connz</a><br/>
	<a href=/routez>routez</a><br/>
	<a href=/subsz>subsz</a><br/>
	<a href=/healthz>healthz</a><br/>
	<a href=/metrics>metrics</a><br/>
	<a href=/live>live</a><br/>
  </body>
</html>
"#;

/// `/live`: messages per second in and out, connections, routes and slow consumers,
/// updated every second from `/varz` (rates over the last 5 s), with the last minute drawn.
pub const LIVE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ringnats live</title>
<style>
  body { font-family: sans-serif; margin: 2em; color: #222; }
  table { border-collapse: collapse; }
  td { padding: 0.3em 1.2em 0.3em 0; font-size: 1.4em; }
  td.v { font-variant-numeric: tabular-nums; text-align: right; font-weight: bold; }
  #status { color: #777; margin-top: 1em; }
  canvas { border: 1px solid #ccc; margin-top: 1em; }
</style>
</head>
<body>
<h1>ringnats <span id="server_id"></span></h1>
<table>
  <tr><td>msgs/s in</td><td class="v" id="in_rate">-</td></tr>
  <tr><td>msgs/s out</td><td class="v" id="out_rate">-</td></tr>
  <tr><td>connections</td><td class="v" id="connections">-</td></tr>
  <tr><td>routes</td><td class="v" id="routes">-</td></tr>
  <tr><td>slow consumers</td><td class="v" id="slow_consumers">-</td></tr>
  <tr><td>messages in</td><td class="v" id="in_msgs">-</td></tr>
  <tr><td>messages out</td><td class="v" id="out_msgs">-</td></tr>
  <tr><td>uptime</td><td class="v" id="uptime">-</td></tr>
</table>
<canvas id="chart" width="600" height="150"></canvas>
<div id="status">waiting for /varz</div>
<script>
(function () {
  // The last few /varz samples: rates are taken over up to 5 s, so one slow poll does
  // not make them jump.
  var samples = [], hist = [];
  function set(id, v) { document.getElementById(id).textContent = v; }
  // /varz times have nanoseconds; Date.parse wants milliseconds.
  function ms(t) { return Date.parse(t.replace(/(\.\d{3})\d*/, "$1")); }
  function rate(n) { return n >= 1e6 ? (n / 1e6).toFixed(2) + " M" : n >= 1e4 ? (n / 1e3).toFixed(1) + " k" : String(Math.round(n)); }
  function draw() {
    var c = document.getElementById("chart"), g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    var max = 1;
    hist.forEach(function (p) { max = Math.max(max, p[0], p[1]); });
    [[0, "#1f77b4"], [1, "#d62728"]].forEach(function (s) {
      g.strokeStyle = s[1]; g.beginPath();
      hist.forEach(function (p, i) {
        var x = i * c.width / 59, y = c.height - 2 - p[s[0]] / max * (c.height - 4);
        if (i === 0) { g.moveTo(x, y); } else { g.lineTo(x, y); }
      });
      g.stroke();
    });
  }
  function show(v) {
    var t = ms(v.now);
    if (samples.length && t <= samples[samples.length - 1].t) { samples = []; }
    samples.push({ t: t, in: v.in_msgs, out: v.out_msgs });
    if (samples.length > 6) { samples.shift(); }
    var first = samples[0], last = samples[samples.length - 1];
    if (last.t > first.t) {
      var dt = (last.t - first.t) / 1000;
      var rin = Math.max(0, last.in - first.in) / dt, rout = Math.max(0, last.out - first.out) / dt;
      set("in_rate", rate(rin));
      set("out_rate", rate(rout));
      hist.push([rin, rout]);
      if (hist.length > 60) { hist.shift(); }
      draw();
    }
    set("server_id", v.server_id);
    set("connections", v.connections);
    set("routes", v.routes);
    set("slow_consumers", v.slow_consumers);
    set("in_msgs", v.in_msgs);
    set("out_msgs", v.out_msgs);
    set("uptime", v.uptime);
    set("status", "updated " + new Date().toLocaleTimeString());
  }
  function tick() {
    fetch("/varz", { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(show)
      .catch(function (e) { set("status", "no answer from the server: " + e); });
  }
  tick();
  setInterval(tick, 1000);
})();
</script>
</body>
</html>
"##;
