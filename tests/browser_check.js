// Injected by tests/test_report.py (and tests/test_outputs.py) into a copy of a page: measures what a reader
// sees at the window's width and writes the result as JSON into a <pre> that --dump-dom shows.
window.addEventListener("load", () => {
  const doc = document.documentElement;
  const out = { viewport: doc.clientWidth, sections: [], images: [], overflow: [], links: [] };
  const shown = (el) => {
    const st = getComputedStyle(el);
    return st.display !== "none" && st.visibility !== "hidden" && Number(st.opacity) > 0;
  };
  if (doc.scrollWidth > doc.clientWidth) {
    out.overflow.push({ what: "page", scroll: doc.scrollWidth, client: doc.clientWidth });
  }
  for (const s of document.querySelectorAll("section")) {
    const r = s.getBoundingClientRect();
    out.sections.push({ id: s.id, width: r.width, height: r.height, shown: shown(s) });
  }
  for (const img of document.querySelectorAll("img")) {
    const r = img.getBoundingClientRect();
    out.images.push({
      alt: img.alt, width: r.width, height: r.height, natural: img.naturalWidth,
      shown: shown(img), section: img.closest("section") ? img.closest("section").id : null,
    });
  }
  const boxes = "body, section, nav, div, table, figure, pre, ul, p";
  for (const el of document.querySelectorAll(boxes)) {
    const r = el.getBoundingClientRect();
    if (el.scrollWidth > el.clientWidth + 1 || r.right > doc.clientWidth + 0.5) {
      out.overflow.push({
        what: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
          (el.className ? "." + el.className : ""),
        scroll: el.scrollWidth, client: el.clientWidth, right: r.right,
        text: (el.textContent || "").slice(0, 80),
      });
    }
  }
  for (const a of document.querySelectorAll("#tripod a[href^='#']")) {
    const id = a.getAttribute("href").slice(1);
    const target = document.getElementById(id);
    const link = { item: a.dataset.tripod, id: id, exists: Boolean(target) };
    if (target) {
      window.scrollTo(0, 0);
      a.click();
      const r = target.getBoundingClientRect();
      Object.assign(link, {
        hash: location.hash, top: r.top, bottom: r.bottom, height: r.height,
        shown: shown(target), scrolled: window.scrollY,
        inView: r.top >= -1 && r.top < window.innerHeight && r.height > 0,
      });
    }
    out.links.push(link);
  }
  // the smallest text a reader has to read (elements with text of their own, shown)
  out.minFont = null;
  for (const el of document.body.querySelectorAll("*")) {
    const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !shown(el) || el.getBoundingClientRect().width === 0) continue;
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (out.minFont === null || size < out.minFont.size) {
      out.minFont = { size: size, text: el.textContent.trim().slice(0, 40) };
    }
  }
  out.height = doc.scrollHeight;
  window.scrollTo(0, 0);
  const pre = document.createElement("pre");
  pre.id = "__browser_check__";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
