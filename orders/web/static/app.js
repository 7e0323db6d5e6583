// sagaflow demo page: place an order and watch its saga.
//
// Everything here talks to the orders API of docs/http-api.md on the same
// origin: GET /products and /customers fill the form and the panels, POST
// /orders places an order, GET /orders/{id}/events (Server-Sent Events)
// streams the watched order, and GET /events streams a summary of every
// order, which keeps the recent list current and tells the panels to refetch.
//
// Server data is only ever put into the page as text (el() below), never as
// HTML.
'use strict';

// The order saga's steps, in the words of someone who has never heard of
// sagas. An unknown step is still shown, under its own name.
const STEPS = {
  'reserve-stock': {
    title: 'Reserve stock',
    does: 'Hold the ordered items in the warehouse.',
    undoTitle: 'Release stock',
    undoes: 'Put the held items back on sale.',
    service: 'stock service',
  },
  'charge-payment': {
    title: 'Charge payment',
    does: "Take the order total from the customer's balance.",
    undoTitle: 'Refund payment',
    undoes: 'Give the money back.',
    service: 'payment service',
  },
  'confirm-order': {
    title: 'Confirm order',
    does: 'Confirm the order: the held items become sold.',
    undoTitle: null,
    undoes: 'Cannot be undone: once confirmed, the order stands.',
    service: 'stock service',
  },
};
const STEP_ORDER = ['reserve-stock', 'charge-payment', 'confirm-order'];

const TERMINAL = new Set(['Completed', 'Cancelled', 'Failed']);
const RECENT_LIMIT = 20;
const PANEL_REFRESH_MS = 300; // at most one refetch of the panels per this

// Step statuses (saga.StepStatus) as words, and as data-status values.
const STEP_STATUS = {
  Pending: 'pending',
  Running: 'running',
  Done: 'done',
  Failed: 'failed',
  Compensating: 'compensating',
  Compensated: 'compensated',
  CompensationFailed: 'compensation failed',
  Skipped: 'skipped',
};

const ORDER_STATUS = {
  Placed: 'placed',
  Running: 'running',
  Compensating: 'undoing',
  Completed: 'completed',
  Cancelled: 'cancelled',
  Failed: 'needs operator',
};

const state = {
  products: [], // as GET /products returns them
  customers: [], // as GET /customers returns them
  recent: new Map(), // order_id -> OrderSummary
  watching: null, // order id shown in the saga column
  order: null, // the latest Order of it
  orderSource: null, // its EventSource
  actionAttempts: {}, // step name -> highest action attempt seen (lost once the step compensates)
  retryBody: null, // body and key of a POST that got no answer, to retry with the same key
  parallel: null, // whether the last order seen charged while it reserved (null: none seen yet)
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- helpers

// el builds an element: attrs are attributes (and data-*), children are
// nodes or strings (added as text).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const moneyFormat = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'EUR' });
function money(cents) {
  return moneyFormat.format((Number(cents) || 0) / 100);
}

function kebab(s) {
  return String(s).replace(/ /g, '-');
}

function stepInfo(name) {
  return STEPS[name] || {
    title: humanize(name),
    does: '',
    undoTitle: 'Undo ' + humanize(name).toLowerCase(),
    undoes: '',
    service: 'service',
  };
}

// humanize turns "charge-payment" into "Charge payment".
function humanize(name) {
  const s = String(name || '').replace(/[-_]+/g, ' ').trim();
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function lower(s) {
  return s.charAt(0).toLowerCase() + s.slice(1);
}

// duration turns a Go duration ("2s", "150ms") into words.
function duration(d) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(d);
  if (!m) return d;
  const unit = { ms: 'ms', s: m[1] === '1' ? 'second' : 'seconds', m: m[1] === '1' ? 'minute' : 'minutes', h: m[1] === '1' ? 'hour' : 'hours' }[m[2]];
  return `${m[1]} ${unit}`;
}

function customerName(id) {
  const c = state.customers.find((x) => x.id === id);
  return c ? c.name : id;
}

function productName(id) {
  const p = state.products.find((x) => x.id === id);
  return p ? p.name : id;
}

function itemsText(lines) {
  return (lines || []).map((l) => `${l.quantity} × ${productName(l.product_id)}`).join(', ');
}

// newKey returns a fresh Idempotency-Key. crypto.randomUUID exists only in
// secure contexts (https, localhost); the page may be opened over plain http
// on another address, so build a version 4 UUID by hand there.
function newKey() {
  if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function getJSON(path) {
  const res = await fetch(path, { headers: { Accept: 'application/json' } });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

// ---------------------------------------------------------------- the form

function selectedScenario() {
  const r = document.querySelector('input[name="scenario"]:checked');
  return r ? r.value : 'ok';
}

// quantities returns product id -> quantity typed in the form (0 when empty).
function quantities() {
  const q = {};
  for (const input of document.querySelectorAll('#lines input[data-product]')) {
    const n = Number(input.value);
    q[input.dataset.product] = Number.isFinite(n) ? n : 0;
  }
  return q;
}

function setQuantity(productID, n) {
  const input = document.querySelector(`#lines input[data-product="${CSS.escape(productID)}"]`);
  if (input) input.value = String(n);
}

function formLines() {
  const q = quantities();
  // Anything but 0 is sent, even -1 or 1.5: the server says what is wrong.
  return state.products.filter((p) => (q[p.id] || 0) !== 0).map((p) => ({ product_id: p.id, quantity: q[p.id] }));
}

function formTotal() {
  return formLines().reduce((sum, l) => {
    const p = state.products.find((x) => x.id === l.product_id);
    return sum + (p ? p.price_cents * l.quantity : 0);
  }, 0);
}

// renderForm fills the customer select and the product rows. It keeps what
// the person chose: rows are built once per catalogue, and a refresh only
// updates the numbers.
function renderForm() {
  const select = $('customer');
  const chosen = select.value;
  const ids = state.customers.map((c) => c.id).join('\n');
  if (select.dataset.ids !== ids) {
    select.replaceChildren(...state.customers.map((c) => el('option', { value: c.id }, c.name)));
    select.dataset.ids = ids;
    if (chosen && state.customers.some((c) => c.id === chosen)) select.value = chosen;
  }

  const tbody = $('lines');
  const pids = state.products.map((p) => p.id).join('\n');
  if (tbody.dataset.ids !== pids) {
    const q = quantities();
    tbody.replaceChildren(...state.products.map((p, i) => {
      const inputID = `qty-${i}`;
      return el('tr', { 'data-testid': `line-${p.id}` },
        el('td', {}, el('label', { for: inputID }, p.name)),
        el('td', { class: 'n' }, money(p.price_cents)),
        el('td', { class: 'n', 'data-field': 'available' }, String(p.available)),
        el('td', { class: 'n' }, el('input', {
          type: 'number', id: inputID, min: 0, max: 1000, step: 1, inputmode: 'numeric',
          value: q[p.id] || 0, 'data-product': p.id, 'data-testid': `qty-${p.id}`,
        })));
    }));
    tbody.dataset.ids = pids;
  } else {
    for (const p of state.products) {
      const cell = tbody.querySelector(`tr[data-testid="line-${CSS.escape(p.id)}"] [data-field="available"]`);
      if (cell) cell.textContent = String(p.available);
    }
  }
  renderFormHints();
}

// renderFormHints shows the chosen customer's money, the total, and what the
// form as filled in is expected to do.
function renderFormHints() {
  const c = state.customers.find((x) => x.id === $('customer').value);
  $('customer-help').textContent = c
    ? `Balance ${money(c.balance_cents)}; ${hasLimit(c) ? `may spend at most ${money(c.order_limit_cents)} per order` : 'no per-order limit'}.`
    : '';
  const total = formTotal();
  $('total').textContent = formLines().length ? money(total) : '–';
  $('scenario-note').textContent = 'If you place this order: ' + expectation(c, total);
}

// expectation says what the form as filled in should lead to. It is a guess
// from the numbers on the page; the saga decides.
function expectation(c, total) {
  const lines = formLines();
  if (!c) return 'choose a customer.';
  if (!lines.length) return 'choose at least one product.';
  for (const l of lines) {
    const p = state.products.find((x) => x.id === l.product_id);
    if (p && l.quantity > p.available) {
      return `step 1 fails: ${l.quantity} × ${p.name} ordered, only ${p.available} available. ` +
        (parallelSteps() ? 'The charge of step 2, sent at the same time, is refunded.' : 'Nothing was done yet, so nothing needs undoing.');
    }
  }
  if (selectedScenario() === 'slow-payment') {
    return 'step 2 gets no answer in time and is tried again; then the stock reserved in step 1 is released, and any charge is refunded.';
  }
  if (total > c.balance_cents) {
    return `step 2 is declined: ${money(total)} is more than ${c.name}'s balance of ${money(c.balance_cents)}. The stock reserved in step 1 is then released.`;
  }
  if (hasLimit(c) && total > c.order_limit_cents) {
    return `step 2 is declined: ${money(total)} is over ${c.name}'s per-order limit of ${money(c.order_limit_cents)}. The stock reserved in step 1 is then released.`;
  }
  return 'all three steps succeed.';
}

// parallelSteps reports whether the saga charges the payment at the same
// time as it reserves the stock (the orchestrator's -parallel, the
// default), as the watched order's steps say; without an order, as the
// last order seen said.
function parallelSteps() {
  const steps = state.order && state.order.steps;
  if (steps && steps.length > 1) state.parallel = Boolean(steps[1].parallel);
  return state.parallel !== false;
}

// hasLimit reports whether customer c has a per-order limit: 0 (or none)
// means no limit.
function hasLimit(c) {
  return Number(c.order_limit_cents) > 0;
}

// spendable is the most customer c can pay for one order.
function spendable(c) {
  return hasLimit(c) ? Math.min(c.balance_cents, c.order_limit_cents) : c.balance_cents;
}

// applyScenario prepares the form for the scenario just picked, so that
// clicking Place order shows it; the person can still change anything.
function applyScenario(name) {
  const customers = state.customers;
  const products = state.products;
  if (!customers.length || !products.length) return;
  const byBalance = [...customers].sort((a, b) => a.balance_cents - b.balance_cents);
  const inStock = products.filter((p) => p.available > 0);
  const q = quantities();

  switch (name) {
    case 'ok':
    case 'slow-payment': {
      // The customer who can spend the most, and an order within their
      // means and within the stock, so that only the scenario can go wrong.
      const rich = [...customers].sort((a, b) => spendable(b) - spendable(a))[0];
      $('customer').value = rich.id;
      for (const p of products) if (q[p.id] > p.available) setQuantity(p.id, p.available);
      if ((!formLines().length || formTotal() > spendable(rich)) && inStock.length) {
        const cheap = [...inStock].sort((a, b) => a.price_cents - b.price_cents)[0];
        for (const p of products) setQuantity(p.id, 0);
        setQuantity(cheap.id, 1);
      }
      break;
    }
    case 'declined': {
      // The customer with the least money, and an order that costs more
      // than that (but is in stock, so step 1 succeeds).
      const poor = byBalance[0];
      $('customer').value = poor.id;
      for (const p of products) if (q[p.id] > p.available) setQuantity(p.id, p.available);
      if (formTotal() <= spendable(poor) && inStock.length) {
        const dear = [...inStock].sort((a, b) => b.price_cents - a.price_cents)[0];
        const need = Math.floor(spendable(poor) / dear.price_cents) + 1;
        for (const p of products) setQuantity(p.id, 0);
        setQuantity(dear.id, Math.min(need, dear.available));
      }
      break;
    }
    case 'out-of-stock': {
      // One more than is available of the scarcest product, for the
      // customer who can spend the most: the charge runs at the same time
      // as the reservation, and a charge that could be declined too would
      // leave to chance which of the two failures the order shows.
      const scarce = [...products].sort((a, b) => a.available - b.available)[0];
      const rich = [...customers].sort((a, b) => spendable(b) - spendable(a))[0];
      $('customer').value = rich.id;
      for (const p of products) setQuantity(p.id, 0);
      setQuantity(scarce.id, scarce.available + 1);
      break;
    }
  }
  renderFormHints();
}

function clearErrors() {
  for (const e of document.querySelectorAll('.field-error')) e.textContent = '';
  for (const e of document.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
  const box = $('form-errors');
  box.replaceChildren();
  box.hidden = true;
}

// showProblem shows an application/problem+json answer (RFC 9457): each
// error next to the field it names, the rest in the box under the button.
function showProblem(p, sentLines) {
  const rest = [];
  for (const e of p.errors || []) {
    const field = String(e.field || '');
    const detail = String(e.detail || 'is not valid');
    let m;
    if (field === 'customer_id' || field === 'customer') {
      $('customer').setAttribute('aria-invalid', 'true');
      addText($('customer-error'), `Customer ${detail}.`);
    } else if ((m = /^lines\[(\d+)\](?:\.(\w+))?$/.exec(field))) {
      const line = sentLines[Number(m[1])];
      const what = m[2] === 'quantity' ? 'quantity' : (m[2] || 'line');
      if (line) {
        const input = document.querySelector(`#lines input[data-product="${CSS.escape(line.product_id)}"]`);
        if (input) input.setAttribute('aria-invalid', 'true');
        addText($('lines-error'), `${productName(line.product_id)}: ${what} ${detail}.`);
      } else {
        addText($('lines-error'), `Line ${Number(m[1]) + 1}: ${what} ${detail}.`);
      }
    } else if (field === 'lines') {
      addText($('lines-error'), `Products: ${detail}.`);
    } else if (field === 'scenario') {
      addText($('scenario-error'), `Scenario: ${detail}.`);
    } else {
      rest.push(field ? `${field}: ${detail}` : detail);
    }
  }
  const box = $('form-errors');
  const title = p.title || `The order was refused (HTTP ${p.status || '?'})`;
  box.replaceChildren(el('p', {}, el('strong', {}, title), p.detail ? ` ${p.detail}` : ''));
  if (rest.length) box.append(el('ul', {}, rest.map((r) => el('li', {}, r))));
  box.hidden = false;
}

function addText(node, text) {
  node.textContent = node.textContent ? `${node.textContent} ${text}` : text;
}

async function placeOrder(ev) {
  ev.preventDefault();
  clearErrors();
  const lines = formLines();
  if (!lines.length) {
    addText($('lines-error'), 'Choose at least one product: set a quantity above 0.');
    return;
  }
  const body = {
    customer_id: $('customer').value,
    lines,
    scenario: selectedScenario() === 'slow-payment' ? 'slow-payment' : '',
  };
  const text = JSON.stringify(body);
  // A new order gets a new key. Only a retry of a request that got no
  // answer reuses its key, so the server can tell it is the same order.
  const key = state.retryBody && state.retryBody.text === text ? state.retryBody.key : newKey();
  const button = $('place-order');
  button.disabled = true;
  button.textContent = 'Placing…';
  try {
    let res;
    try {
      res = await fetch('/orders', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'Idempotency-Key': key },
        body: text,
      });
    } catch (err) {
      state.retryBody = { text, key };
      showProblem({ title: 'Could not reach the orders service.', detail: `${err.message} Click Place order again to retry the same order.` }, lines);
      return;
    }
    state.retryBody = null;
    const type = res.headers.get('Content-Type') || '';
    const data = type.includes('json') ? await res.json().catch(() => null) : null;
    if (!res.ok) {
      showProblem(data && typeof data === 'object' ? data : { status: res.status, title: `The order was refused (HTTP ${res.status}).` }, lines);
      return;
    }
    const id = (data && data.order_id) || (res.headers.get('Location') || '').split('/').pop();
    if (data && data.order_id) upsertRecent(data);
    watch(id, data && data.order_id ? data : null);
  } finally {
    button.disabled = false;
    button.textContent = 'Place order';
  }
}

// ---------------------------------------------------------------- the saga

// watch shows order id in the saga column and follows it live.
function watch(id, initial) {
  if (state.orderSource) state.orderSource.close();
  state.orderSource = null;
  if (state.watching !== id) state.actionAttempts = {};
  state.watching = id;
  if (initial) state.order = initial;
  else if (!state.order || state.order.order_id !== id) state.order = null;
  renderSaga();
  renderRecent();
  openOrderStream(id, 0);
}

function openOrderStream(id, failures) {
  const src = new EventSource(`/orders/${encodeURIComponent(id)}/events`);
  state.orderSource = src;
  src.addEventListener('order', (ev) => {
    failures = 0;
    let o;
    try { o = JSON.parse(ev.data); } catch { return; }
    if (o.order_id !== state.watching) return;
    // Ignore a snapshot older than the one shown (history only grows).
    if (state.order && state.order.order_id === o.order_id &&
        (o.history || []).length < (state.order.history || []).length) return;
    state.order = o;
    renderSaga();
    upsertRecent(o);
    if (TERMINAL.has(o.status) && settled(o)) {
      src.close();
      refreshPanels();
    }
  });
  src.addEventListener('error', () => {
    // EventSource reconnects by itself after a dropped connection; it gives
    // up (CLOSED) on an HTTP error, such as a 404 from a read model that has
    // not seen the order yet, so try again a few times, more slowly.
    if (src.readyState !== EventSource.CLOSED || state.orderSource !== src) return;
    if (state.order && TERMINAL.has(state.order.status)) return;
    if (failures >= 10) return;
    setTimeout(() => {
      if (state.watching === id && state.orderSource === src) openOrderStream(id, failures + 1);
    }, 500 * (failures + 1));
  });
}

// steps returns the order's steps, or the saga's steps as pending while the
// saga has not started.
function stepsOf(o) {
  if (o && o.steps && o.steps.length) return o.steps;
  return STEP_ORDER.map((name) => ({ name, status: 'Pending', attempt: 0, limit: 0, compensable: name !== 'confirm-order' }));
}

// settled reports whether the order's steps and history have caught up
// with its status. The read model learns that a saga ended from the end
// event or from the last snapshot, whichever it reads first (they are on
// different topics), so for a moment an order can be Cancelled with the
// steps and history of its Compensating snapshot, or Completed with none.
function settled(o) {
  const h = o.history || [];
  return !TERMINAL.has(o.status) || (h.length > 0 && h[h.length - 1].to === o.status);
}

// shown is the order as the saga column shows it: until its snapshot
// arrives, an order that ended shows the state its history reached, so the
// explanation never runs ahead of the steps it explains.
function shown(o) {
  if (!o || settled(o)) return o;
  const h = o.history || [];
  return { ...o, status: h.length ? h[h.length - 1].to : 'Placed' };
}

function renderSaga() {
  const o = shown(state.order);
  renderOrderHead(o);
  renderBanner(o);
  renderTimeline(o);
  renderCompensations(o);
  renderHistory(o);
}

function renderOrderHead(o) {
  const head = $('order-head');
  if (!state.watching) return;
  if (!o) {
    head.replaceChildren(el('p', { class: 'muted' }, 'Loading order ', el('span', { class: 'id' }, state.watching), '…'));
    return;
  }
  head.replaceChildren(
    el('p', {},
      el('strong', {}, customerName(o.customer_id)), ' orders ', itemsText(o.lines), ' for ',
      el('strong', {}, money(o.total_cents)),
      o.scenario ? el('span', { class: 'muted' }, ` (scenario: ${o.scenario})`) : null),
    el('p', { class: 'muted' }, 'Order ', el('span', { class: 'id', 'data-testid': 'order-id' }, o.order_id),
      ' · ', el('span', { 'data-testid': 'order-status', 'data-status': o.status }, ORDER_STATUS[o.status] || o.status)),
  );
}

function renderBanner(o) {
  const b = $('banner');
  if (!o) {
    b.dataset.state = 'none';
    b.replaceChildren('What happened to the order, and why, will be explained here.');
    return;
  }
  const { title, text } = explain(o);
  b.dataset.state = o.status;
  b.replaceChildren(el('strong', {}, title), text);
}

function renderTimeline(o) {
  const steps = stepsOf(o);
  if (o) {
    // Remember action attempts: once a step compensates, its attempt
    // counter counts the compensation instead.
    for (const s of steps) {
      if (['Running', 'Done', 'Failed'].includes(s.status) && s.attempt > (state.actionAttempts[s.name] || 0)) {
        state.actionAttempts[s.name] = s.attempt;
      }
    }
  }
  $('timeline').replaceChildren(...steps.map((s, i) => {
    const info = stepInfo(s.name);
    const status = STEP_STATUS[s.status] || String(s.status).toLowerCase();
    let meta = '';
    if (['Running', 'Done', 'Failed'].includes(s.status)) {
      meta = attemptsText(s.attempt, s.limit);
    } else if (state.actionAttempts[s.name]) {
      meta = attemptsText(state.actionAttempts[s.name], 0);
    }
    let sub = info.does;
    if (s.status === 'Skipped') sub = 'Not run: the order turned back before this step.';
    const done = o && succeeded(o, s.name);
    if (s.status === 'Compensated') sub = done ? 'Done, then undone (see below).' : 'No answer yet when the order turned back, so undone to be safe (see below).';
    if (s.status === 'Compensating') sub = done ? 'Done; being undone (see below).' : 'No answer yet when the order turned back; being undone to be safe (see below).';
    const together = s.parallel && i > 0 ? ` (at the same time as step ${i})` : '';
    return el('li', { 'data-testid': `step-${s.name}`, 'data-status': kebab(status) },
      el('span', { class: 'idx', 'aria-hidden': 'true' }, i + 1),
      el('span', { class: 'what' }, el('strong', {}, `${i + 1}. ${info.title}`, together ? el('span', { class: 'together' }, together) : null), el('span', {}, sub)),
      el('span', { class: 'meta' }, el('span', { class: 'chip' }, status), el('br'), el('span', { 'data-testid': 'attempts' }, meta)));
  }));
}

function attemptsText(attempt, limit) {
  if (!attempt) return '';
  if (limit && limit > 1) return `attempt ${attempt} of ${limit}`;
  return attempt === 1 ? '1 attempt' : `${attempt} attempts`;
}

// renderCompensations lists the undo of each step, in the order the saga
// runs them: the last step done first. While compensating, the undos still
// to come are shown as pending.
function renderCompensations(o) {
  const list = $('compensations');
  const steps = stepsOf(o);
  const rows = [];
  for (let i = steps.length - 1; i >= 0; i--) {
    const s = steps[i];
    let status = null;
    let meta = '';
    if (s.status === 'Compensating' || s.status === 'Compensated' || s.status === 'CompensationFailed') {
      status = STEP_STATUS[s.status];
      meta = attemptsText(s.attempt, s.limit);
    } else if (o && o.status === 'Compensating' && s.status === 'Done' && s.compensable) {
      status = 'pending';
    } else {
      continue;
    }
    const info = stepInfo(s.name);
    rows.push(el('li', { 'data-testid': `undo-${s.name}`, 'data-status': kebab(status) },
      el('span', { class: 'idx', 'aria-hidden': 'true' }, '↩'),
      el('span', { class: 'what' }, el('strong', {}, `Undo step ${i + 1}: ${info.undoTitle}`), el('span', {}, info.undoes)),
      el('span', { class: 'meta' }, el('span', { class: 'chip' }, status), el('br'), el('span', { 'data-testid': 'attempts' }, meta))));
  }
  if (!rows.length) {
    let text = 'Nothing to undo so far.';
    if (!o) text = 'If a step fails, the steps already done are undone here, last first.';
    else if (o.status === 'Completed') text = 'Nothing was undone: every step succeeded.';
    else if (o.status === 'Cancelled' || o.status === 'Failed') text = 'Nothing to undo: no step had been done.';
    rows.push(el('li', { class: 'empty' }, text));
  }
  list.replaceChildren(...rows);
}

function renderHistory(o) {
  const list = $('history');
  const history = (o && o.history) || [];
  if (!o) {
    list.replaceChildren();
    return;
  }
  const t0 = Date.parse(o.placed_at || (history[0] && history[0].at) || '') || null;
  const items = [el('li', {}, el('time', { datetime: o.placed_at || '' }, '+0.00 s'), 'The order was accepted.')];
  for (const h of history) {
    const at = Date.parse(h.at);
    const offset = t0 && at ? `+${((at - t0) / 1000).toFixed(2)} s` : '';
    items.push(el('li', { 'data-testid': 'history-entry' },
      el('time', { datetime: h.at, title: h.at }, offset),
      el('span', { title: h.cause }, changeText(h))));
  }
  if (o.status === 'Placed') items.push(el('li', {}, el('time', {}, ''), 'Waiting for the saga to start…'));
  list.replaceChildren(...items);
  list.scrollTop = list.scrollHeight;
}

// changeText turns one history entry (saga.Change) into plain sentences: its
// cause, then what the change of state means.
function changeText(h) {
  const parts = String(h.cause || '').split('; ').filter(Boolean).map(causeText);
  if (h.to === 'Compensating' && h.from === 'Running') parts.push('So the steps already done are undone, last first.');
  if (h.to === 'Completed') parts.push('The order is complete.');
  if (h.to === 'Cancelled') parts.push('The order is cancelled.');
  if (h.to === 'Failed') parts.push('The saga stopped: an operator must look at it.');
  return parts.join(' ');
}

const SUCCEEDED = {
  'reserve-stock': 'The stock was reserved.',
  'charge-payment': 'The payment went through.',
  'confirm-order': 'The order was confirmed; the reserved items are now sold.',
};
// SENT is for a step whose command the saga sends without waiting for an
// answer (saga.Step.NoReply): done as it is sent.
const SENT = {
  'confirm-order': 'The order was confirmed; the stock service now turns the reserved items into sold ones.',
};
const COMPENSATED = {
  'reserve-stock': 'Undone: the reserved stock was released.',
  'charge-payment': 'Undone: the payment was refunded (or, if it never went through, called off).',
};

// CAUSES matches the wording of saga.Change causes (saga/transition.go).
const CAUSES = [
  [/^saga started$/, () => (parallelSteps() ? 'The saga started with steps 1 and 2, at the same time.' : 'The saga started with step 1.')],
  [/^waiting for step (\S+)$/, (m) => `Waiting for ${lower(stepInfo(m[1]).title)}.`],
  [/^step (\S+) succeeded$/, (m) => SUCCEEDED[m[1]] || `${stepInfo(m[1]).title} succeeded.`],
  [/^step (\S+) sent \(it takes no reply\)$/, (m) => SENT[m[1]] || `${stepInfo(m[1]).title}: sent; the saga does not wait for an answer.`],
  [/^step (\S+) failed(?:: (.+))?$/, (m) => `${stepInfo(m[1]).title} failed${m[2] ? `: ${m[2]}` : ''}.`],
  [/^step (\S+) compensated$/, (m) => COMPENSATED[m[1]] || `Undone: ${lower(stepInfo(m[1]).title)}.`],
  [/^step (\S+) timed out after (\S+) \(attempt (\d+)\/(\d+)\)$/,
    (m) => `${stepInfo(m[1]).title}: the ${stepInfo(m[1]).service} did not answer within ${duration(m[2])} (attempt ${m[3]} of ${m[4]}).`],
  [/^compensation of step (\S+) timed out after (\S+) \(attempt (\d+)\/(\d+)\)$/,
    (m) => `${stepInfo(m[1]).undoTitle}: the ${stepInfo(m[1]).service} did not answer within ${duration(m[2])} (attempt ${m[3]} of ${m[4]}).`],
  [/^step (\S+) failed transiently \(attempt (\d+)\/(\d+)\)(?:: (.+))?$/,
    (m) => `${stepInfo(m[1]).title} hit a temporary problem${m[4] ? ` (${m[4]})` : ''} (attempt ${m[2]} of ${m[3]}).`],
  [/^compensation of step (\S+) failed \(attempt (\d+)\/(\d+)\)(?:: (.+))?$/,
    (m) => `${stepInfo(m[1]).undoTitle} did not work${m[4] ? ` (${m[4]})` : ''} (attempt ${m[2]} of ${m[3]}).`],
  [/^retrying in (\S+)$/, (m) => `Trying again in ${duration(m[1])}.`],
  [/^backoff over, retrying (the compensation of )?step (\S+) \(attempt (\d+)\/(\d+)\)$/,
    (m) => `Trying ${lower(m[1] ? stepInfo(m[2]).undoTitle : stepInfo(m[2]).title)} again (attempt ${m[3]} of ${m[4]}).`],
  [/^saga deadline of (\S+) passed$/, (m) => `The order ran out of time: the whole saga may take at most ${duration(m[1])}.`],
  [/^saga deadline passed$/, () => 'The order ran out of time.'],
  [/^operator retry of the compensation of step (\S+)(?:: (.+))?$/,
    (m) => `An operator asked to try ${lower(stepInfo(m[1]).undoTitle)} again${m[2] ? ` (${m[2]})` : ''}.`],
  [/^operator retry of step (\S+)(?:: (.+))?$/,
    (m) => `An operator asked to try ${lower(stepInfo(m[1]).title)} again${m[2] ? ` (${m[2]})` : ''}.`],
  [/^operator force-compensate(?:: (.+))?$/, (m) => `An operator cancelled the order${m[1] ? ` (${m[1]})` : ''}.`],
  [/^cannot build the (action|compensation) of step (\S+): (.+)$/,
    (m) => `The order's data could not be turned into the ${m[1] === 'action' ? '' : 'undo '}command of ${lower(stepInfo(m[2]).title)} (${m[3]}).`],
];

function causeText(part) {
  for (const [re, f] of CAUSES) {
    const m = re.exec(part);
    if (m) return f(m);
  }
  // A cause this page does not know: show it as written, as a sentence.
  const s = part.charAt(0).toUpperCase() + part.slice(1);
  return /[.!?]$/.test(s) ? s : s + '.';
}

// succeeded reports whether the history says step name's action succeeded.
function succeeded(o, name) {
  return (o.history || []).some((h) => String(h.cause || '').split('; ').includes(`step ${name} succeeded`));
}

// why says in words why a saga turned back, from its reason (the cause that
// made it compensate, cancel or fail).
function why(o) {
  const r = String(o.reason || '');
  let m;
  if ((m = /^step (\S+) failed(?:: (.+))?$/.exec(r))) {
    const detail = aside(m[2]);
    switch (m[1]) {
      case 'reserve-stock': return `there was not enough stock${detail}`;
      case 'charge-payment': return `the payment was declined${detail}`;
      case 'confirm-order': return `the order could not be confirmed${detail}`;
      default: return `${lower(stepInfo(m[1]).title)} failed${detail}`;
    }
  }
  if ((m = /^step (\S+) timed out after (\S+) \(attempt (\d+)\/(\d+)\)/.exec(r))) {
    const tries = m[4] === '1' ? `within ${duration(m[2])}` : `in ${m[4]} tries of ${duration(m[2])} each`;
    return `the ${stepInfo(m[1]).service} did not answer ${tries}`;
  }
  if ((m = /^step (\S+) failed transiently \(attempt (\d+)\/(\d+)\)(?:: (.+))?/.exec(r))) {
    return `the ${stepInfo(m[1]).service} kept failing${m[4] ? ` (${m[4]})` : ''}`;
  }
  if ((m = /^(?:the )?compensation of step (\S+) (?:failed|timed out)/.exec(r))) {
    return `undoing step "${stepInfo(m[1]).title}" kept failing (${lower(causeText(r)).replace(/\.$/, '')})`;
  }
  if (/^saga deadline/.test(r)) return 'the order took too long';
  if ((m = /^operator force-compensate(?:: (.+))?$/.exec(r))) return `an operator cancelled it${m[1] ? ` (${m[1]})` : ''}`;
  if (r) return lower(causeText(r)).replace(/\.$/, '');
  return 'a step failed';
}

// aside appends a participant's reason to a sentence: in parentheses, or
// after a colon when it has parentheses of its own. The words the sentence
// already says ("out of stock", "payment declined") are left out.
function aside(reason) {
  const r = String(reason || '').replace(/^(out of stock|insufficient stock|(payment )?declined)\s*:\s*/i, '');
  if (!r) return '';
  return r.includes('(') ? `: ${r}` : ` (${r})`;
}

// undoneText says what was undone, in the order it was undone.
function undoneText(o, steps) {
  const out = [];
  for (let i = steps.length - 1; i >= 0; i--) {
    const s = steps[i];
    if (s.status !== 'Compensated') continue;
    const done = succeeded(o, s.name);
    switch (s.name) {
      case 'reserve-stock':
        out.push(done ? `the stock reserved in step ${i + 1} was released`
          : `the stock of step ${i + 1} was released, in case it had been reserved`);
        break;
      case 'charge-payment':
        out.push(done ? `the payment taken in step ${i + 1} was refunded`
          : `the payment of step ${i + 1} was refunded, in case it had been taken`);
        break;
      default:
        out.push(`step ${i + 1} (${lower(stepInfo(s.name).title)}) was undone`);
    }
  }
  return out;
}

// moneyText says whether the customer ended up paying.
function moneyText(o, steps) {
  const charge = steps.find((s) => s.name === 'charge-payment');
  if (!charge) return '';
  const who = customerName(o.customer_id);
  if (charge.status === 'Compensated') {
    return succeeded(o, 'charge-payment')
      ? `${who} got the ${money(o.total_cents)} back.`
      : `${who}'s balance is unchanged.`;
  }
  if (charge.status === 'Done') return `${who} was charged ${money(o.total_cents)}.`;
  return 'Nothing was charged.';
}

// explain is the banner: what happened to the order, and why, for someone
// who has never heard of sagas.
function explain(o) {
  const steps = stepsOf(o);
  const n = steps.length;
  const cur = steps.findIndex((s) => s.status === 'Running' || s.status === 'Compensating');
  switch (o.status) {
    case 'Placed':
      return { title: 'Accepted', text: 'The order was accepted; its saga starts in a moment.' };
    case 'Running': {
      const running = steps.map((s, i) => i).filter((i) => steps[i].status === 'Running');
      if (running.length > 1) {
        const titles = running.map((i) => lower(stepInfo(steps[i].name).title)).join(' and ');
        return { title: 'In progress', text: `Steps ${running.map((i) => i + 1).join(' and ')} of ${n}, at the same time: ${titles}…` };
      }
      const s = steps[cur] || steps[0];
      const info = stepInfo(s.name);
      const retry = s.attempt > 1 ? ` (attempt ${s.attempt} of ${s.limit}: the ${info.service} has not answered yet)` : '';
      return { title: 'In progress', text: `Step ${(cur < 0 ? 0 : cur) + 1} of ${n}: ${lower(info.title)}${retry}…` };
    }
    case 'Compensating': {
      const s = steps[cur];
      const now = s ? ` Now: ${lower(stepInfo(s.name).undoTitle || 'undo')} (undoing step ${cur + 1}).` : '';
      return { title: 'Undoing', text: `The order cannot go through: ${why(o)}. So what was already done is being undone, last step first.${now}` };
    }
    case 'Completed':
      return {
        title: 'Completed',
        text: `${itemsText(o.lines)} ${(o.lines || []).length === 1 && o.lines[0].quantity === 1 ? 'was' : 'were'} reserved, ` +
          `${customerName(o.customer_id)} was charged ${money(o.total_cents)}, and the order was confirmed: the items are sold.`,
      };
    case 'Cancelled': {
      const undone = undoneText(o, steps);
      const so = undone.length
        ? `, so ${undone.join(', and then ')}.`
        : '. No step had finished, so there was nothing to undo.';
      return { title: 'Cancelled', text: `The order did not go through: ${why(o)}${so} ${moneyText(o, steps)}` };
    }
    case 'Failed': {
      const stuck = steps.find((s) => s.status === 'CompensationFailed');
      if (stuck) {
        return {
          title: 'Stopped: needs an operator',
          text: `The order did not go through, and ${why(o)}. The saga stopped rather than guess; an operator can retry the undo.`,
        };
      }
      return {
        title: 'Stopped: needs an operator',
        text: `${humanize(why(o))}, at a point where the order can no longer be undone automatically. An operator must decide. ${moneyText(o, steps)}`,
      };
    }
    default:
      return { title: o.status, text: o.reason || '' };
  }
}

// ---------------------------------------------------------------- panels

let panelSeq = 0;

// refreshPanels refetches stock and balances. Answers can arrive out of
// order; only the newest request's are used.
async function refreshPanels() {
  const seq = ++panelSeq;
  try {
    const [p, c] = await Promise.all([getJSON('/products'), getJSON('/customers')]);
    if (seq !== panelSeq) return;
    state.products = p.products || [];
    state.customers = c.customers || [];
    renderPanels();
    renderForm();
  } catch (err) {
    console.warn('refresh panels:', err);
  }
}

let refreshTimer = null;

// scheduleRefresh refetches the panels soon, at most once per
// PANEL_REFRESH_MS however many events arrive.
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refreshPanels();
  }, PANEL_REFRESH_MS);
}

// renderPanels redraws the stock and balance tables; a number that changed
// since the last draw flashes.
function renderPanels() {
  const stock = $('stock');
  const old = numbersIn(stock);
  stock.replaceChildren(...state.products.map((p) =>
    el('tr', { 'data-testid': `stock-${p.id}` },
      el('th', { scope: 'row' }, p.name),
      numberCell('available', p.available, String(p.available), old[`${p.id}/available`]),
      numberCell('reserved', p.reserved, String(p.reserved), old[`${p.id}/reserved`]),
      numberCell('sold', p.sold, String(p.sold), old[`${p.id}/sold`]))));

  const balances = $('balances');
  const oldB = numbersIn(balances);
  balances.replaceChildren(...state.customers.map((c) =>
    el('tr', { 'data-testid': `balance-${c.id}` },
      el('th', { scope: 'row' }, c.name),
      numberCell('balance_cents', c.balance_cents, money(c.balance_cents), oldB[`${c.id}/balance_cents`]),
      numberCell('order_limit_cents', c.order_limit_cents, hasLimit(c) ? money(c.order_limit_cents) : 'none', oldB[`${c.id}/order_limit_cents`]))));
}

function numbersIn(tbody) {
  const out = {};
  for (const td of tbody.querySelectorAll('td[data-field]')) {
    out[`${td.parentElement.dataset.testid.replace(/^(stock|balance)-/, '')}/${td.dataset.field}`] = Number(td.dataset.value);
  }
  return out;
}

function numberCell(field, value, text, before) {
  const changed = before !== undefined && before !== value;
  return el('td', { class: changed ? 'n flash' : 'n', 'data-field': field, 'data-value': value }, text);
}

// ---------------------------------------------------------------- recent orders

function upsertRecent(o) {
  if (!o || !o.order_id) return;
  const prev = state.recent.get(o.order_id);
  state.recent.set(o.order_id, { ...prev, ...summaryOf(o) });
  renderRecent();
}

// summaryOf turns an Order into an OrderSummary (the names of the steps in
// flight in place of the steps), as the API's summaries are.
function summaryOf(o) {
  const { lines, steps, history, ...rest } = o;
  if (!rest.active_steps && steps) {
    const live = o.status === 'Running' || o.status === 'Compensating';
    rest.active_steps = live ? steps.filter((x) => x.status === 'Running' || x.status === 'Compensating').map((x) => x.name) : [];
  }
  return rest;
}

// activeTitles names the steps an order is at, "reserve stock and charge
// payment" while both run at once; it falls back to the summary's step for
// a server that does not send active_steps.
function activeTitles(o) {
  const names = o.active_steps && o.active_steps.length ? o.active_steps : (o.step ? [o.step] : []);
  return names.map((n) => lower(stepInfo(n).title)).join(' and ');
}

function renderRecent() {
  const list = $('recent');
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.order : null;
  const orders = [...state.recent.values()].sort((a, b) =>
    String(b.placed_at || '').localeCompare(String(a.placed_at || '')) || String(b.order_id).localeCompare(String(a.order_id)));
  for (const o of orders.slice(RECENT_LIMIT)) state.recent.delete(o.order_id);
  list.replaceChildren(...orders.slice(0, RECENT_LIMIT).map((o) => {
    const status = ORDER_STATUS[o.status] || String(o.status || '').toLowerCase();
    let where = '';
    const at = activeTitles(o);
    if (o.status === 'Running' && at) where = ` · at: ${at}`;
    if (o.status === 'Compensating' && at) where = ` · undoing: ${at}`;
    const placed = o.placed_at ? new Date(o.placed_at).toLocaleTimeString() : '';
    return el('li', { 'data-testid': `recent-${o.order_id}`, 'data-status': o.status, 'aria-current': o.order_id === state.watching ? 'true' : null },
      el('button', { type: 'button', 'data-order': o.order_id, title: `Watch order ${o.order_id}` },
        el('span', { class: 'who' }, `${customerName(o.customer_id)} · ${money(o.total_cents)}`),
        el('span', { class: 'chip', 'data-status': kebab(status) }, status),
        el('span', { class: 'sub2' }, `${placed} · ${o.order_id}${where}`)));
  }));
  $('recent-empty').hidden = orders.length > 0;
  if (focused) {
    const b = list.querySelector(`button[data-order="${CSS.escape(focused)}"]`);
    if (b) b.focus();
  }
}

async function loadRecent() {
  try {
    const data = await getJSON(`/orders?limit=${RECENT_LIMIT}`);
    for (const o of data.orders || []) state.recent.set(o.order_id, o);
    renderRecent();
  } catch (err) {
    console.warn('recent orders:', err);
  }
}

// ---------------------------------------------------------------- all orders, live

function followAll() {
  const conn = $('connection');
  const src = new EventSource('/events');
  src.addEventListener('open', () => {
    conn.textContent = 'Live';
    conn.dataset.state = 'live';
    // Catch up on what happened while not connected.
    loadRecent();
    scheduleRefresh();
  });
  src.addEventListener('order', (ev) => {
    let o;
    try { o = JSON.parse(ev.data); } catch { return; }
    upsertRecent(o);
    scheduleRefresh();
  });
  src.addEventListener('error', () => {
    conn.textContent = 'Reconnecting…';
    conn.dataset.state = 'down';
    // A dropped connection is retried by EventSource itself; an HTTP error
    // closes it for good, so start again after a pause.
    if (src.readyState === EventSource.CLOSED) setTimeout(followAll, 3000);
  });
}

// ---------------------------------------------------------------- start

function start() {
  $('order-form').addEventListener('submit', placeOrder);
  $('customer').addEventListener('change', renderFormHints);
  $('lines').addEventListener('input', renderFormHints);
  for (const r of document.querySelectorAll('input[name="scenario"]')) {
    r.addEventListener('change', () => { if (r.checked) applyScenario(r.value); });
  }
  $('recent').addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-order]');
    if (b) watch(b.dataset.order, null);
  });
  renderSaga();
  refreshPanels().then(() => {
    // A fresh page starts with a sensible order ready to place.
    if (!formLines().length) applyScenario(selectedScenario());
  });
  loadRecent();
  followAll();
}

start();
