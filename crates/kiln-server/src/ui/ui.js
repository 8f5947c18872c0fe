// kiln console: the parts of a page that move. No framework, no build step.
"use strict";
const ROOT = "/_kiln/ui";

async function api(service, op, body) {
  const r = await fetch(`${ROOT}/api/${service}/${op}`, {
    method: "POST", headers: { "content-type": "application/json", "x-kiln-console": "1" },
    body: JSON.stringify(body || {}), credentials: "same-origin" });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.message || r.statusText);
  return j;
}

// The jobs table refreshes itself while the page is visible.
function refreshRows(tbody) {
  setInterval(async () => {
    if (document.hidden) return;
    const r = await fetch(tbody.dataset.refresh, { credentials: "same-origin" });
    if (r.ok) tbody.innerHTML = await r.text();
  }, 3000);
}

// The log tail: every stream of the job from its start, then lines as they arrive.
function tailLogs(pre) {
  const es = new EventSource(pre.dataset.logs);
  let count = 0;
  const note = (text) => {
    const s = document.createElement("span");
    s.className = "note";
    s.textContent = text + "\n";
    pre.appendChild(s);
  };
  es.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const h = document.createElement("span");
    h.className = "host";
    h.textContent = `[${ev.host}] `;
    pre.appendChild(h);
    pre.appendChild(document.createTextNode(ev.m + "\n"));
    count++;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  es.addEventListener("end", () => { note(count ? "— the job has ended —" : "The job wrote no log lines."); es.close(); });
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) note("— the log stream was closed —"); };
}

// One small line chart per metric (inline SVG).
function chart(name, series) {
  const scatter = !Array.isArray(series) && series.scatter;
  const points = (Array.isArray(series) ? series : series.points).slice().sort((a, b) => a[0] - b[0]);
  const W = 330, H = 150, L = 44, R = 8, T = 8, B = 20;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => L + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (W - L - R);
  const sy = (y) => T + (y1 > y0 ? 1 - (y - y0) / (y1 - y0) : 0.5) * (H - T - B);
  const fmt = (v) => Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : +v.toFixed(4);
  const line = scatter ? "" : points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
  const dot = scatter || points.length === 1
    ? points.map((p) => `<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3"/>`).join("") : "";
  const xl = scatter ? [fmt(x0), fmt(x1)] : ["0s", `${Math.round(x1 - x0)}s`];
  const div = document.createElement("div");
  div.className = "chart";
  div.dataset.metric = name;
  div.dataset.points = points.length;
  div.innerHTML = `<span class="last"></span><span class="name"></span>
    <svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">
      <line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/><line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/>
      <text x="${L - 4}" y="${T + 8}" text-anchor="end">${fmt(y1)}</text>
      <text x="${L - 4}" y="${H - B}" text-anchor="end">${fmt(y0)}</text>
      <text x="${L}" y="${H - 6}">${xl[0]}</text>
      <text x="${W - R}" y="${H - 6}" text-anchor="end">${xl[1]}</text>
      <polyline points="${line}"/>${dot}</svg>`;
  div.querySelector(".name").textContent = name;
  div.querySelector(".last").textContent = `${points.length} points · last ${fmt(ys[ys.length - 1])}`;
  return div;
}

function drawCharts(box, series) {
  const size = (s) => (Array.isArray(s) ? s : s.points).length;
  // The job's own metrics first, then each host's utilization.
  const host = (k) => /^(CPU|Memory|Disk|GPU|GPUMemory)Utilization /.test(k);
  const names = Object.keys(series).filter((k) => size(series[k]))
    .sort((a, b) => (host(a) - host(b)) || a.localeCompare(b));
  if (!names.length) return;
  box.replaceChildren(...names.map((n) => chart(n, series[n])));
}

function metrics(box) {
  const load = async () => {
    const r = await fetch(box.dataset.metrics, { credentials: "same-origin" });
    if (r.ok) drawCharts(box, await r.json());
  };
  load();
  if (box.dataset.live) setInterval(() => { if (!document.hidden) load(); }, 3000);
}

// A running job's page follows its status; it reloads once the job has ended.
function followStatus(name) {
  const timer = setInterval(async () => {
    try {
      const d = await api("SageMaker", "DescribeTrainingJob", { TrainingJobName: name });
      if (!["InProgress", "Stopping"].includes(d.TrainingJobStatus)) {
        clearInterval(timer);
        setTimeout(() => location.reload(), 1500);
      }
    } catch (e) { /* signed out or gone: leave the page as it is */ }
  }, 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("tbody[data-refresh]").forEach(refreshRows);
  document.querySelectorAll("pre[data-logs]").forEach(tailLogs);
  document.querySelectorAll("[data-metrics]").forEach(metrics);
  document.querySelectorAll("[data-series]").forEach((b) => drawCharts(b, JSON.parse(b.dataset.series)));
  const live = document.querySelector("[data-metrics][data-live='1']");
  if (live) followStatus(decodeURIComponent(live.dataset.metrics.split("/").slice(-2)[0]));
  document.querySelectorAll("button[data-stop]").forEach((b) => b.addEventListener("click", async () => {
    if (!confirm(`Stop training job ${b.dataset.stop}?`)) return;
    b.disabled = true;
    try {
      await api("SageMaker", "StopTrainingJob", { TrainingJobName: b.dataset.stop });
      b.textContent = "Stopping…";
    } catch (e) { alert(`Could not stop it: ${e.message}`); b.disabled = false; }
  }));
  document.querySelectorAll("button[data-release]").forEach((b) => b.addEventListener("click", async () => {
    if (!confirm(`Release the warm pool of ${b.dataset.release}?`)) return;
    b.disabled = true;
    try {
      await api("SageMaker", "UpdateTrainingJob",
        { TrainingJobName: b.dataset.release, ResourceConfig: { KeepAlivePeriodInSeconds: 0 } });
      location.reload();
    } catch (e) { alert(`Could not release it: ${e.message}`); b.disabled = false; }
  }));
});
