// Drawings as SVG built with DOM calls (no inline styles, so the CSP holds): a push's funnel,
// bars by channel, and geofences plotted by latitude and longitude. Every bar carries its
// label and number, and bars differ by pattern, so nothing depends on colour alone.

const NS = "http://www.w3.org/2000/svg";
let uid = 0;

export function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c);
  return e;
}

// Four fills that differ without colour: solid, diagonal hatch, dots, cross-hatch.
function patterns(defs, prefix) {
  const kinds = [
    ["solid", []],
    ["hatch", [["path", { d: "M0,8 L8,0", stroke: "#1d4e89", "stroke-width": 2 }]]],
    ["dots", [["circle", { cx: 3, cy: 3, r: 1.6, fill: "#1d4e89" }]]],
    ["cross", [["path", { d: "M0,0 L8,8 M8,0 L0,8", stroke: "#1d4e89", "stroke-width": 1.4 }]]],
  ];
  return kinds.map(([name, shapes]) => {
    const id = `${prefix}-${name}`;
    const background = name === "solid" ? "#1d4e89" : "#dfe8f3";
    defs.append(svg("pattern", { id, width: 8, height: 8, patternUnits: "userSpaceOnUse" },
      svg("rect", { width: 8, height: 8, fill: background }),
      ...shapes.map(([t, a]) => svg(t, a))));
    return `url(#${id})`;
  });
}

const pct = (n, of) => (of > 0 ? ` (${Math.round((100 * n) / of)}%)` : "");

// Horizontal bars, one per [label, value], scaled to the largest (or `max`).
export function bars(rows, { title, max, width = 400 } = {}) {
  const rowH = 24, labelW = 118, numW = 72;
  const h = rows.length * rowH + 6;
  const defs = svg("defs");
  const fills = patterns(defs, `p${++uid}`);
  const top = max ?? Math.max(1, ...rows.map((r) => r[1]));
  const barW = width - labelW - numW;
  const root = svg("svg", { class: "funnel", viewBox: `0 0 ${width} ${h}`, role: "img",
    "aria-label": (title ? title + ": " : "") + rows.map(([l, v]) => `${l} ${v}`).join(", ") });
  root.append(defs);
  rows.forEach(([label, value], i) => {
    const y = 3 + i * rowH;
    const w = top > 0 ? Math.max(value > 0 ? 2 : 0, (barW * value) / top) : 0;
    const key = label.toLowerCase().replace(/[^a-z0-9]+/g, "-");
    root.append(svg("text", { x: 0, y: y + 16 }, label));
    root.append(svg("rect", { x: labelW, y: y + 3, width: barW, height: rowH - 8, fill: "none",
      stroke: "#d5dae0" }));
    root.append(svg("rect", { x: labelW, y: y + 3, width: w, height: rowH - 8,
      fill: fills[i % fills.length], stroke: "#1d4e89", "data-bar": key }));
    root.append(svg("text", { x: labelW + barW + 6, y: y + 16, "data-value": key },
      `${value}${i > 0 ? pct(value, top) : ""}`));
  });
  return root;
}

// targeted → sent → delivered → clicked.
export function funnel(f, title = "Funnel") {
  return bars([
    ["Targeted", f.targeted],
    ["Sent", f.sent],
    ["Delivered", f.delivered],
    ["Clicked", f.clicked],
  ], { title, max: Math.max(1, f.targeted) });
}

const CHANNEL_NAMES = {
  pigeon: "Pigeon connection", apns: "APNs", fcm: "FCM", huawei: "Huawei", honor: "Honor",
  xiaomi: "Xiaomi", oppo: "OPPO", vivo: "vivo", meizu: "Meizu", webpush: "Web Push",
};
export const channelName = (c) => CHANNEL_NAMES[c] ?? c;

// Sent by channel, one labelled bar per channel.
export function channels(list) {
  return bars(list.map((c) => [channelName(c.channel), c.sent]), { title: "Sent by channel" });
}

// Geofences as circles on a plain lat/lon plot (equirectangular around their centre).
export function geofencePlot(fences, width = 600, height = 360) {
  const root = svg("svg", { class: "plot", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Plot of ${fences.length} geofences by latitude and longitude` });
  if (fences.length === 0) return root;
  const midLat = fences.reduce((s, f) => s + f.lat, 0) / fences.length;
  const k = Math.max(0.05, Math.cos((midLat * Math.PI) / 180));
  const degLat = (m) => m / 111320;
  let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (const f of fences) {
    const r = degLat(f.radius_m);
    minX = Math.min(minX, f.lon * k - r); maxX = Math.max(maxX, f.lon * k + r);
    minY = Math.min(minY, f.lat - r); maxY = Math.max(maxY, f.lat + r);
  }
  const pad = 30;
  const span = Math.max(maxX - minX, maxY - minY, 1e-6);
  const scale = Math.min((width - 2 * pad) / span, (height - 2 * pad) / span);
  const cx = (minX + maxX) / 2, cy = (minY + maxY) / 2;
  const X = (lon) => width / 2 + (lon * k - cx) * scale;
  const Y = (lat) => height / 2 - (lat - cy) * scale;
  const defs = svg("defs");
  const fills = patterns(defs, `g${++uid}`);
  root.append(defs);
  const half = (height / 2 - pad) / scale;
  root.append(svg("text", { x: 4, y: 12 }, `N lat ${(cy + half).toFixed(4)}`));
  root.append(svg("text", { x: 4, y: height - 4 },
    `S lat ${(cy - half).toFixed(4)} · W lon ${((cx - (width / 2) / scale) / k).toFixed(4)}`));
  root.append(svg("text", { x: width - 4, y: height - 4, "text-anchor": "end" },
    `E lon ${((cx + (width / 2) / scale) / k).toFixed(4)}`));
  fences.forEach((f, i) => {
    const r = Math.max(3, degLat(f.radius_m) * scale);
    root.append(svg("circle", { cx: X(f.lon), cy: Y(f.lat), r, fill: fills[(i % 3) + 1],
      "fill-opacity": 0.6, stroke: "#1d4e89", "stroke-width": 1.5, "data-fence": f.geofence_id }));
    root.append(svg("circle", { cx: X(f.lon), cy: Y(f.lat), r: 2, fill: "#1b1f24" }));
    root.append(svg("text", { x: X(f.lon) + 4, y: Y(f.lat) - 4 },
      `${f.name || f.geofence_id} (${Math.round(f.radius_m)} m)`));
  });
  return root;
}
