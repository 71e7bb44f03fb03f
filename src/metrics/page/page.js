// The status page's script: fetches status.json every 5 s and draws one card per deployment
// with Chart.js (the global `Chart`, loaded before this file). Plain browser JavaScript, served
// as it is: nothing to build. Every value from the database reaches the page as textContent,
// never as markup: deployment names are checked, but reasons name tables and columns.
'use strict';

(() => {
  const REFRESH_MS = 5_000;
  const COLORS = { live: '#2f6fdf', base: '#9aa4b2', bad: '#cf222e', p99: '#e8912d' };
  const views = new Map();
  const main = document.getElementById('deployments');
  const updated = document.getElementById('updated');
  const errorBox = document.getElementById('error');
  let lastOk;

  Chart.defaults.animation = false;
  Chart.defaults.font.size = 11;
  Chart.defaults.maintainAspectRatio = false;

  // --- formatting -----------------------------------------------------------------------------
  const dash = '–';
  const int = (n) => (n === null || n === undefined ? dash : Math.round(Number(n)).toLocaleString());
  const fixed = (n, digits) => (n === null || n === undefined ? dash : Number(n).toFixed(digits));
  const percent = (share, digits = 1) => (share === null || share === undefined ? dash : `${(share * 100).toFixed(digits)} %`);
  const ms = (n) => (n === null || n === undefined ? dash : `${Number(n).toLocaleString(undefined, { maximumFractionDigits: 2 })} ms`);
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const minuteLabel = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  function age(seconds) {
    if (seconds === null || seconds === undefined) return dash;
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }
  const edge = (x) => Number(x).toPrecision(3).replace(/\.?0+$/, '');
  /** The bucket names of a baseline: ranges between its cut points, or its top categories and the rest. */
  function bucketLabels(summary) {
    if (summary.kind === 'categorical') return [...summary.categories.map(String), 'other'];
    const e = summary.edges;
    return [`< ${edge(e[0])}`, ...e.slice(1).map((x, i) => `${edge(e[i])} – ${edge(x)}`), `≥ ${edge(e[e.length - 1])}`];
  }

  // --- DOM helpers: text only -------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function fact(dl, name, label, wide) {
    const row = el('div', wide ? 'wide' : '');
    row.dataset.row = name;
    row.append(el('dt', '', label));
    const dd = el('dd');
    dd.dataset.field = name;
    row.append(dd);
    dl.append(row);
    return dd;
  }
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }
  function cell(tr, className, text) {
    const td = el('td', className, text);
    tr.append(td);
    return td;
  }

  // --- charts ----------------------------------------------------------------------------------
  function isolated(context) {
    const data = context.dataset.data;
    const i = context.dataIndex;
    const empty = (j) => j < 0 || j >= data.length || data[j] === null || data[j] === 0;
    return data[i] !== null && data[i] !== 0 && empty(i - 1) && empty(i + 1) ? 2 : 0;
  }
  function lineChart(canvas, datasets, yTitle) {
    return new Chart(canvas, {
      type: 'line',
      // A minute between two empty ones has no line to be on: it gets a dot.
      data: { labels: [], datasets: datasets.map((d) => ({ pointRadius: isolated, borderWidth: 1.5, spanGaps: false, data: [], ...d })) },
      options: {
        interaction: { mode: 'index', intersect: false },
        layout: { padding: { right: 4, top: 2 } },
        plugins: { legend: { labels: { boxWidth: 10, boxHeight: 10 } } },
        scales: {
          x: { ticks: { maxTicksLimit: 6, maxRotation: 0 } },
          y: { beginAtZero: true, title: { display: true, text: yTitle } },
        },
      },
    });
  }
  function histogram(canvas) {
    return new Chart(canvas, {
      type: 'bar',
      data: { labels: [], datasets: [
        { label: 'baseline', backgroundColor: COLORS.base, data: [] },
        { label: 'live, last hour', backgroundColor: COLORS.live, data: [] },
      ] },
      options: {
        responsive: false,
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${(c.parsed.y * 100).toFixed(1)} %` } },
        },
        scales: { x: { display: false }, y: { display: false, beginAtZero: true } },
        datasets: { bar: { categoryPercentage: 0.9, barPercentage: 1 } },
      },
    });
  }

  // --- one card per deployment -------------------------------------------------------------------
  function createView(name) {
    const root = el('section', 'card');
    root.dataset.deployment = name;
    const head = el('header', 'card-head');
    head.append(el('h2', '', name));
    const state = el('span', 'badge');
    state.dataset.field = 'state';
    const alerts = el('span', 'alerts');
    alerts.dataset.field = 'alerts';
    head.append(state, alerts);
    const reason = el('p', 'reason');
    reason.dataset.field = 'reason';

    const dl = el('dl', 'facts');
    const f = {
      source: fact(dl, 'source', 'table'),
      model: fact(dl, 'model', 'model'),
      split: fact(dl, 'split', 'split', true),
      shadow: fact(dl, 'shadow', 'shadow'),
      versions: fact(dl, 'versions', 'versions in use, last hour'),
      pending: fact(dl, 'pending', 'pending rows'),
      oldest: fact(dl, 'oldest', 'oldest pending'),
      scoredMinute: fact(dl, 'scored-minute', 'scored, last minute'),
      latency: fact(dl, 'latency', 'latency p50 / p99, last minute'),
      dead: fact(dl, 'dead-letters', 'dead letters'),
      kafka: fact(dl, 'in-kafka', 'in Kafka'),
      last: fact(dl, 'last-scored', 'last scored'),
    };

    const charts = el('div', 'charts');
    const figure = (caption) => {
      const fig = el('figure');
      const cap = el('figcaption', '', caption);
      const box = el('div', 'chart');
      const canvas = el('canvas');
      canvas.setAttribute('role', 'img');
      canvas.setAttribute('aria-label', caption);
      box.append(canvas);
      fig.append(cap, box);
      charts.append(fig);
      return { cap, canvas };
    };
    const tp = figure('Throughput, rows per minute');
    const scoredHour = el('span');
    scoredHour.dataset.field = 'scored-hour';
    tp.cap.append(' · ', scoredHour, ' in the last hour');
    const lat = figure('Latency, queued → committed, per minute');
    const throughput = lineChart(tp.canvas, [
      { label: 'scored', borderColor: COLORS.live, backgroundColor: 'rgba(47,111,223,0.12)', fill: true },
      { label: 'dead letters', borderColor: COLORS.bad },
    ], 'rows/min');
    const latency = lineChart(lat.canvas, [
      { label: 'p50', borderColor: COLORS.live },
      { label: 'p99', borderColor: COLORS.p99 },
    ], 'ms');

    const driftTitle = el('h3', '', 'Drift, last hour');
    const legend = el('p', 'legend');
    const threshold = el('span');
    legend.append('Population stability index against the version\'s baseline; drifted above ', threshold, '. Shares per bucket:',
      el('span', 'swatch base'), 'baseline', el('span', 'swatch live'), 'live');
    const driftTable = table(['feature', 'baseline vs live', 'PSI', 'drifted', 'version', 'rows', 'nulls', 'out of range'],
      [false, false, true, false, false, true, true, true]);
    driftTable.table.classList.add('drift');
    const driftNote = el('p', 'note');

    const qualityTitle = el('h3', '', 'Live quality, last day');
    const qualityTable = table(['version', 'role', 'labelled', 'accuracy', 'AUC', 'log loss', 'MAE', 'RMSE', ''],
      [false, false, true, true, true, true, true, true, false]);
    qualityTable.table.classList.add('quality');
    const qualityNote = el('p', 'note');

    root.append(head, reason, dl, charts, driftTitle, legend, driftTable.wrap, driftNote, qualityTitle, qualityTable.wrap, qualityNote);
    return {
      root, state, alerts, reason, f, scoredHour, throughput, latency, legend, threshold, driftTable, driftNote, driftRows: new Map(),
      qualityTable, qualityNote, qualityRows: new Map(),
    };
  }

  function table(headings, numeric) {
    const wrap = el('div', 'scroll');
    const t = el('table');
    const tr = el('tr');
    headings.forEach((h, i) => tr.append(el('th', numeric[i] ? 'num' : '', h)));
    const thead = el('thead');
    thead.append(tr);
    const tbody = el('tbody');
    t.append(thead, tbody);
    wrap.append(t);
    return { wrap, table: t, tbody };
  }

  function renderView(v, d, quality) {
    setText(v.state, d.state);
    v.state.className = `badge ${d.state}`;
    // The state badge says "invalid" already.
    const alerts = d.alerts.filter((a) => a !== 'invalid');
    v.alerts.replaceChildren(...alerts.map((a) => el('span', 'badge alert', a.replace('_', ' '))));
    setText(v.reason, d.reason ?? '');
    v.reason.hidden = !d.reason;

    setText(v.f.source, d.source);
    setText(v.f.model, d.model === d.model_version ? d.model : `${d.model} → ${d.model_version}`);
    setText(v.f.split, (d.variants ?? []).map((x) => `${x.model} ${percent(x.share, 0)}`).join(' · '));
    v.f.split.parentElement.hidden = !d.variants;
    setText(v.f.shadow, d.shadow ?? '');
    v.f.shadow.parentElement.hidden = !d.shadow;
    setText(v.f.versions, d.versions_in_use.length ? d.versions_in_use.join(', ') : dash);
    setText(v.f.pending, int(d.pending));
    setText(v.f.oldest, d.pending ? age(d.oldest_pending_seconds) : dash);
    setText(v.f.scoredMinute, int(d.scored_last_minute));
    setText(v.f.latency, `${ms(d.latency_p50_ms)} / ${ms(d.latency_p99_ms)}`);
    setText(v.f.dead, int(d.dead_letters));
    setText(v.f.kafka, int(d.in_kafka));
    v.f.kafka.parentElement.hidden = d.in_kafka === null;
    setText(v.f.last, d.last_scored_at ? clock(d.last_scored_at) : 'never');

    const labels = d.minutes.map((m) => minuteLabel(m.minute));
    setText(v.scoredHour, `${int(d.minutes.reduce((sum, m) => sum + m.scored, 0))} rows`);
    update(v.throughput, labels, [d.minutes.map((m) => m.scored), d.minutes.map((m) => m.dead)]);
    update(v.latency, labels, [d.minutes.map((m) => m.p50_ms), d.minutes.map((m) => m.p99_ms)]);

    renderDrift(v, d.drift);
    renderQuality(v, quality, d.deployment);
  }

  function update(chart, labels, series) {
    chart.data.labels = labels;
    series.forEach((data, i) => (chart.data.datasets[i].data = data));
    chart.update('none');
  }

  function renderDrift(v, features) {
    const seen = new Set();
    features.forEach((x, i) => {
      const key = `${x.model}\u0000${x.kind}\u0000${x.feature}`;
      seen.add(key);
      let row = v.driftRows.get(key);
      if (!row) {
        const tr = el('tr');
        Object.assign(tr.dataset, { feature: x.feature, kind: x.kind, model: x.model });
        cell(tr, 'feature', x.feature).append(el('span', 'kind', x.kind));
        const canvas = el('canvas');
        canvas.width = 120;
        canvas.height = 36;
        canvas.setAttribute('role', 'img');
        canvas.setAttribute('aria-label', `${x.feature}: baseline against live shares`);
        cell(tr, 'hist').append(canvas);
        const cells = { psi: cell(tr, 'num psi'), drifted: cell(tr, 'drifted') };
        cell(tr, '', x.model);
        Object.assign(cells, { rows: cell(tr, 'num'), nulls: cell(tr, 'num'), out: cell(tr, 'num') });
        cells.psi.dataset.field = 'psi';
        row = { tr, cells, chart: histogram(canvas) };
        v.driftRows.set(key, row);
      }
      if (v.driftTable.tbody.children[i] !== row.tr) v.driftTable.tbody.insertBefore(row.tr, v.driftTable.tbody.children[i] ?? null);
      row.tr.classList.toggle('drifted', x.drifted);
      setText(row.cells.rows, int(x.rows));
      setText(row.cells.psi, fixed(x.psi, 3));
      setText(row.cells.drifted, x.drifted ? 'yes' : 'no');
      setText(row.cells.nulls, percent(x.null_share));
      setText(row.cells.out, percent(x.out_of_range_share));
      update(row.chart, bucketLabels(x.baseline), [x.baseline.freqs, x.live]);
    });
    for (const [key, row] of v.driftRows) {
      if (seen.has(key)) continue;
      row.chart.destroy();
      row.tr.remove();
      v.driftRows.delete(key);
    }
    setText(v.threshold, String(features[0]?.threshold ?? ''));
    v.legend.hidden = features.length === 0;
    v.driftTable.wrap.hidden = features.length === 0;
    setText(v.driftNote, features.length ? '' : 'Nothing to compare: no baseline (ml.set_baseline, or the first rows of a version), or no rows in the last hour.');
    v.driftNote.hidden = features.length > 0;
  }

  function renderQuality(v, quality, deployment) {
    const rows = quality && Array.isArray(quality.rows) ? quality.rows.filter((q) => q.deployment === deployment) : [];
    const seen = new Set();
    rows.forEach((q, i) => {
      seen.add(q.model);
      let row = v.qualityRows.get(q.model);
      if (!row) {
        const tr = el('tr');
        tr.dataset.model = q.model;
        cell(tr, '', q.model);
        const cells = { role: cell(tr, ''), labelled: cell(tr, 'num') };
        for (const m of ['accuracy', 'auc', 'log_loss', 'mae', 'rmse']) {
          cells[m] = cell(tr, 'num');
          cells[m].dataset.field = m;
        }
        cells.verdict = cell(tr, 'verdict');
        row = { tr, cells };
        v.qualityRows.set(q.model, row);
      }
      if (v.qualityTable.tbody.children[i] !== row.tr) v.qualityTable.tbody.insertBefore(row.tr, v.qualityTable.tbody.children[i] ?? null);
      row.tr.classList.toggle('degraded', q.degraded);
      setText(row.cells.role, q.role);
      setText(row.cells.labelled, int(q.labelled));
      for (const m of ['accuracy', 'auc', 'log_loss', 'mae', 'rmse']) {
        const validation = q.validation?.[m];
        setText(row.cells[m], q[m] === null ? dash : `${fixed(q[m], 3)}${validation === undefined ? '' : ` (validation ${fixed(validation, 3)})`}`);
      }
      setText(row.cells.verdict, q.degraded ? 'degraded' : 'ok');
    });
    for (const [key, row] of v.qualityRows) {
      if (seen.has(key)) continue;
      row.tr.remove();
      v.qualityRows.delete(key);
    }
    v.qualityTable.wrap.hidden = rows.length === 0;
    let note = '';
    if (!quality) note = '';
    else if (quality.error) note = `ml.performance could not be read: ${quality.error}`;
    else if (rows.length === 0) note = 'No labelled predictions in the last day (deploy option "label" names the column the truth goes in).';
    else note = `as of ${clock(quality.at)}, read once a minute`;
    setText(v.qualityNote, note);
  }

  // --- the page ---------------------------------------------------------------------------------
  function render(doc) {
    const names = new Set(doc.deployments.map((d) => d.deployment));
    for (const [name, v] of views) {
      if (names.has(name)) continue;
      v.throughput.destroy();
      v.latency.destroy();
      for (const row of v.driftRows.values()) row.chart.destroy();
      v.root.remove();
      views.delete(name);
    }
    doc.deployments.forEach((d, i) => {
      let v = views.get(d.deployment);
      if (!v) {
        v = createView(d.deployment);
        views.set(d.deployment, v);
      }
      if (main.children[i] !== v.root) main.insertBefore(v.root, main.children[i] ?? null);
      renderView(v, d, doc.quality);
    });
    let empty = main.querySelector('.empty-page');
    if (doc.deployments.length === 0 && !empty) {
      empty = el('p', 'empty-page', 'No deployments yet: ml.deploy(…) creates one.');
      main.append(empty);
    } else if (doc.deployments.length > 0 && empty) {
      empty.remove();
    }
  }

  async function refresh() {
    try {
      const response = await fetch('status.json', { cache: 'no-store', signal: AbortSignal.timeout(10_000) });
      const doc = await response.json();
      if (!response.ok) throw new Error(doc.error ?? `HTTP ${response.status}`);
      render(doc);
      lastOk = doc.at;
      errorBox.hidden = true;
      setText(updated, `updated ${clock(doc.at)} · every ${REFRESH_MS / 1000} s`);
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes ?? 0) + 1);
    } catch (error) {
      const since = lastOk ? `; the figures below are from ${clock(lastOk)}` : '';
      setText(errorBox, `Cannot read the status: ${error.message}${since}. Retrying every ${REFRESH_MS / 1000} s.`);
      errorBox.hidden = false;
    }
  }

  // One refresh at a time, none while the tab is hidden, one at once when it shows again.
  let timer;
  let busy = false;
  async function loop() {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    try {
      await refresh();
    } finally {
      busy = false;
    }
    if (!document.hidden) timer = setTimeout(loop, REFRESH_MS);
  }
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) void loop();
  });
  void loop();
})();
