// What the accessibility test evaluates in each page: a list of problems (empty = none).
() => {
  const problems = [];
  for (const el of document.querySelectorAll("input, select, textarea, button, a[href]")) {
    if (el.closest("[hidden]") || el.type === "hidden") continue;
    const named = (el.labels && el.labels.length) || el.getAttribute("aria-label")
      || el.getAttribute("aria-labelledby") || (el.textContent || "").trim();
    if (!named) problems.push(`no accessible name: ${el.outerHTML.slice(0, 120)}`);
  }
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1) problems.push(`page scrolls sideways: ${root.scrollWidth} > ${root.clientWidth}`);
  const rgb = (c) => c.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
  const lum = (c) => {
    const [r, g, b] = rgb(c).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const probe = document.createElement("span");
  document.body.append(probe);
  const color = (v) => { probe.style.color = `var(${v})`; return getComputedStyle(probe).color; };
  for (const [fg, bg] of [["--fg", "--bg"], ["--muted", "--card"], ["--muted", "--bg"], ["--accent", "--card"],
                          ["--danger", "--card"], ["--ok", "--card"], ["--warn", "--card"], ["--accent-fg", "--accent"]]) {
    const r = ratio(color(fg), color(bg));
    if (r < 4.5) problems.push(`contrast ${fg} on ${bg}: ${r.toFixed(2)} < 4.5`);
  }
  probe.remove();
  return problems;
}
