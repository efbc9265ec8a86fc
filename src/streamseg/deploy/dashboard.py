"""The web dashboard `streamseg serve` answers at ``/``: one page, no external assets.

Each stream is a row: its id, status, current label, frames labelled, lag, late chunks, and a timeline
bar that grows as its segments close (one colour per class, width proportional to frames). The page
polls ``/streams`` every second and listens to ``/events`` (Server-Sent Events) for segments.
"""

DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamseg serve</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 16px; background: #fafafa; color: #222; }
 h1 { font-size: 18px; margin: 0 0 8px; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #ddd; white-space: nowrap; }
 td.bar { width: 50%; }
 .timeline { display: flex; height: 18px; background: #eee; width: 100%; }
 .timeline div { height: 100%; }
 .label { font-weight: 600; }
 .error { color: #b00; }
 #legend span { display: inline-block; margin-right: 12px; }
 #legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: middle; }
</style></head>
<body>
<h1>streamseg serve <small id="model"></small></h1>
<div id="legend"></div>
<table><thead><tr><th>stream</th><th>status</th><th>label</th><th>frames</th><th>lag (s)</th>
<th>late</th><th>timeline</th></tr></thead><tbody id="rows"></tbody></table>
<script>
const segments = {};  // stream id -> list of segment events
let classes = [];
const color = (k) => `hsl(${Math.round(k * 360 / Math.max(classes.length, 1))}, 70%, 50%)`;

function row(s) {
  let tr = document.getElementById("s-" + s.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.id = "s-" + s.id;
    tr.innerHTML = "<td class=id></td><td class=status></td><td class=label></td><td class=frames></td>" +
                   "<td class=lag></td><td class=late></td><td class=bar><div class=timeline></div></td>";
    document.getElementById("rows").appendChild(tr);
  }
  return tr;
}

function drawTimeline(tr, id, total) {
  const bar = tr.querySelector(".timeline");
  const segs = segments[id] || [];
  const end = Math.max(total, segs.length ? segs[segs.length - 1].end : 0, 1);
  while (bar.children.length < segs.length) {
    const e = segs[bar.children.length];
    const d = document.createElement("div");
    d.title = `${e.label} ${e.start}-${e.end}`;
    d.style.background = color(e.label_id);
    d.dataset.frames = e.end - e.start;
    bar.appendChild(d);
  }
  for (const d of bar.children) d.style.width = (100 * d.dataset.frames / end) + "%";
}

async function poll() {
  try {
    const streams = await (await fetch("/streams")).json();
    for (const s of streams) {
      const tr = row(s);
      tr.querySelector(".id").textContent = s.id;
      const st = tr.querySelector(".status");
      st.textContent = s.status + (s.error ? ": " + s.error : "");
      st.className = "status" + (s.error ? " error" : "");
      tr.querySelector(".label").textContent = s.label || "";
      tr.querySelector(".frames").textContent = s.frames;
      tr.querySelector(".lag").textContent = s.lag_s === null ? "" : s.lag_s.toFixed(2);
      tr.querySelector(".late").textContent = s.late_chunks;
      if (!(s.id in segments)) {
        segments[s.id] = await (await fetch(`/streams/${encodeURIComponent(s.id)}/events`)).json();
      }
      drawTimeline(tr, s.id, s.frames);
    }
    document.body.dataset.polled = String(Number(document.body.dataset.polled || 0) + 1);
  } catch (e) { console.log(e); }
}

async function start() {
  const meta = await (await fetch("/model")).json();
  classes = meta.class_names;
  document.getElementById("model").textContent = `${classes.length} classes, chunk ${meta.chunk}`;
  document.getElementById("legend").innerHTML =
    classes.map((c, k) => `<span><i style="background:${color(k)}"></i>${c}</span>`).join("");
  const source = new EventSource("/events");
  source.addEventListener("segment", (m) => {
    const e = JSON.parse(m.data);
    const known = segments[e.video];  // absent until the first poll fetched the stream's past events
    if (known && (!known.length || e.start >= known[known.length - 1].end)) known.push(e);
  });
  await poll();
  setInterval(poll, 1000);
}
start();
</script></body></html>
"""
