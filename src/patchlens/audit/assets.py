"""The report page's style sheet and script, inlined into every page (the page loads nothing else)."""

CSS = """
:root { --ink:#1d232b; --muted:#5b6672; --line:#d8dde3; --flag:#b3261e; --flagbg:#fdecea; --okbg:#eef6ee; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); margin: 0 auto; max-width: 1200px; padding: 0 20px 40px; }
h1 { font-size: 1.6em; margin: 18px 0 4px; } h2 { border-bottom: 2px solid var(--line); padding-bottom: 4px; margin-top: 30px; }
h3 { margin: 0 0 6px; } h4 { margin: 16px 0 6px; } .lead, .muted { color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0; } th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
#first li { margin: 6px 0; } .flag { color: var(--flag); font-weight: 600; }
.badge { display: inline-block; background: var(--flagbg); color: var(--flag); border-radius: 10px; padding: 0 8px; font-size: .8em; margin-left: 6px; font-weight: 600; }
nav#controls { position: sticky; top: 0; background: #fff; border-bottom: 1px solid var(--line); padding: 8px 0; z-index: 2; display: flex; gap: 14px; flex-wrap: wrap; align-items: center; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 14px; margin: 14px 0; }
.card.flagged { border-left: 5px solid var(--flag); }
.row { display: flex; gap: 18px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: .82em; color: var(--muted); max-width: 200px; }
ul.signals { padding-left: 18px; } ul.signals li { margin: 4px 0; } ul.signals li.flagged { background: var(--flagbg); padding: 2px 6px; list-style: none; margin-left: -18px; border-radius: 4px; }
.example-sets { display: flex; gap: 10px 22px; flex-wrap: wrap; align-items: flex-start; }
.examples { display: flex; gap: 6px; flex-wrap: wrap; align-items: flex-start; margin-bottom: 6px; max-width: 470px; }
.examples h5 { width: 100%; margin: 6px 0 0; font-size: .9em; }
button.ex { border: 1px solid var(--line); background: #fff; padding: 3px; cursor: zoom-in; width: 148px; text-align: left; font: inherit; font-size: .75em; color: var(--muted); border-radius: 4px; }
button.ex img { width: 140px; height: 105px; object-fit: contain; display: block; background: #f3f4f6; }
button.ex span { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#image-table th { cursor: pointer; user-select: none; position: sticky; top: 48px; background: #fff; }
#image-table th[aria-sort=ascending]::after { content: " \\25B2"; } #image-table th[aria-sort=descending]::after { content: " \\25BC"; }
#image-table td:last-child { min-width: 15em; } #image-table { font-size: .9em; }
#image-table tr.pic { cursor: zoom-in; } #image-table tr.pic td:first-child { text-decoration: underline dotted; }
#viewer { position: fixed; inset: 0; background: rgba(0,0,0,.78); display: flex; align-items: center; justify-content: center; z-index: 10; }
#viewer[hidden] { display: none; }
#viewer figure { background: #fff; padding: 14px; border-radius: 8px; max-width: min(92vw, 900px); }
#viewer img { width: min(85vw, 720px); max-height: 70vh; object-fit: contain; display: block; }
#viewer figcaption { max-width: none; font-size: .95em; color: var(--ink); margin-top: 8px; }
svg.box { display: block; }
.groups { display: flex; flex-direction: column; gap: 10px; }
.group { display: flex; gap: 14px; align-items: flex-start; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
.group.flagged { background: var(--flagbg); border-color: var(--flag); } .group p { margin: 2px 0 6px; max-width: 60em; }
@media print {
  nav#controls, #viewer { display: none !important; }
  .card { break-inside: avoid; } body { max-width: none; font-size: 11pt; }
  #image-table th { position: static; } #more { display: none; } #image-table { font-size: 8pt; }
  #image-table td, #image-table th { padding: 2px 4px; }
}
"""

JS = """
(function () {
  const $ = (s, r) => (r || document).querySelector(s), $$ = (s, r) => Array.from((r || document).querySelectorAll(s));
  const cls = $('#f-class'), flag = $('#f-flag'), text = $('#f-text'), sort = $('#sort'), grp = $('#f-group');
  // A group filter (a SpRAy group of one class) narrows the cards to its class and the table to its rows.
  const chosenGroup = () => grp.value ? grp.selectedOptions[0].dataset : null;
  function matches(el) {
    const flags = (el.dataset.flags || '').split(' ').filter(Boolean), g = chosenGroup();
    return (!cls.value || el.dataset.class === cls.value) && (!g || el.dataset.class === g.class) &&
      (!flag.value || (flag.value === 'any' ? flags.length > 0 : flags.includes(flag.value)));
  }
  // The table of all images is data (id="image-data"); a page of PAGE rows is drawn at a time.
  const PAGE = 200, data = JSON.parse($('#image-data').textContent), body = $('#image-table tbody');
  let selected = data.rows, limit = PAGE, sortKey = null, ascending = true;
  const numeric = Object.fromEntries(data.columns);
  const pct = v => v === null ? '' : Math.round(v * 100) + '%';
  const fmt = {score: v => v.toFixed(3), typicality: v => v.toFixed(2), outside: pct, corners: pct, border: pct,
                centre: pct, group: v => v === null ? '' : v};
  function draw() {
    const frag = document.createDocumentFragment();
    selected.slice(0, limit).forEach(r => {
      const tr = document.createElement('tr');
      tr.dataset.class = r.label; tr.dataset.path = r.path;
      if (r.pic) { tr.className = 'pic'; tr.dataset.pic = r.id; }
      data.columns.forEach(([key, num]) => {
        const td = document.createElement('td');
        td.textContent = fmt[key] ? fmt[key](r[key]) : r[key];
        if (num) td.className = 'n';
        if (key === 'name') td.title = r.path;
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    });
    body.replaceChildren(frag);
    const drawn = Math.min(limit, selected.length);
    $('#more').hidden = drawn >= selected.length;
    $('#shown').textContent = `showing ${drawn} of ${selected.length}`;
  }
  function apply() {
    $$('.card').forEach(c => { c.hidden = !matches(c); });
    const needle = text.value.trim().toLowerCase();
    const g = chosenGroup();
    selected = data.rows.filter(r => matches({dataset: {class: r.label, flags: r.flags}}) &&
      (!g || String(r.group) === g.group) && (!needle || r.path.toLowerCase().includes(needle)));
    order();
    limit = PAGE;
    draw();
    $('#image-count').textContent = selected.length;
    $('#class-count').textContent = $$('.card').filter(c => !c.hidden).length;
  }
  function order() {
    if (!sortKey) return;
    const num = numeric[sortKey], missing = ascending ? Infinity : -Infinity;
    selected.sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      if (x === y) return 0;
      const c = num ? (x === null ? missing : x) - (y === null ? missing : y) : String(x).localeCompare(String(y));
      return ascending ? c : -c;
    });
  }
  $('#more').addEventListener('click', () => { limit += PAGE * 5; draw(); });
  function sortCards() {
    const key = sort.value, box = $('#classes');
    const cards = $$('.card', box);
    cards.sort((a, b) => key === 'class' ? a.dataset.class.localeCompare(b.dataset.class)
      : (parseFloat(b.dataset[key]) - parseFloat(a.dataset[key])) || a.dataset.class.localeCompare(b.dataset.class));
    cards.forEach(c => box.appendChild(c));
  }
  [cls, flag, grp].forEach(el => el.addEventListener('change', apply));
  $$('a.group-link').forEach(a => a.addEventListener('click', () => { grp.value = a.dataset.option; apply(); }));
  text.addEventListener('input', apply);
  sort.addEventListener('change', sortCards);

  $$('#image-table th').forEach(th => th.addEventListener('click', () => {
    ascending = !(sortKey === th.dataset.key && ascending);
    sortKey = th.dataset.key;
    $$('#image-table th').forEach(h => h.removeAttribute('aria-sort'));
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    order(); draw();
  }));

  const viewer = $('#viewer'), big = $('#viewer img'), words = $('#viewer figcaption');
  function show(src, desc) { big.src = src; words.textContent = desc; viewer.hidden = false; $('#viewer button').focus(); }
  document.addEventListener('click', e => {
    const ex = e.target.closest('button.ex');
    if (ex) { show($('img', ex).src, ex.dataset.desc); return; }
    const row = e.target.closest('#image-table tr.pic');
    if (row) { const ex2 = $('button.ex[data-id="' + row.dataset.pic + '"]'); if (ex2) show($('img', ex2).src, ex2.dataset.desc); return; }
    if (e.target === viewer || e.target.closest('#viewer button')) viewer.hidden = true;
  });
  document.addEventListener('keydown', e => { if (e.key === 'Escape') viewer.hidden = true; });
  apply();
})();
"""
