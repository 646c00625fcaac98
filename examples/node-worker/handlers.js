'use strict';
// Handlers of the example "order" flow (examples/flows/order.yaml) in
// JavaScript: a port of examples/handlers/order.py that gives the same
// outputs and the same error messages for the same inputs.  The worker looks
// handlers up by flow slug, then step slug; each takes the task's input (JSON,
// decoded) and returns a JSON-able value or a promise of one.  Money is kept in
// integer cents.
//
// Known difference: JSON numbers such as 2.0 are floats to Python (so an
// invalid quantity) but integers to JavaScript, which cannot tell them apart.

const TAX_BASIS_POINTS = 825; // sales tax, 8.25 %
const BULK_QTY = 10; // lines of at least this many units get the bulk discount
const BULK_DISCOUNT_PERCENT = 5;
const WAREHOUSES = ['ams', 'fra', 'waw'];

// Python's exception class name, so the recorded error is "ValueError: ..." as with the Python handlers.
class ValueError extends Error {
  get name() {
    return 'ValueError';
  }
}

function validate_order(input) {
  const items = input.run.items;
  if (!Array.isArray(items) || items.length === 0) throw new ValueError('order has no items');
  return items.map((item, i) => {
    const number = i + 1;
    const sku = pyStr(item.sku === undefined ? '' : item.sku).trim().toUpperCase();
    const qty = item.qty === undefined ? null : item.qty;
    if (!sku) throw new ValueError(`item ${number} has no sku`);
    if (!Number.isInteger(qty) || qty < 1) {
      throw new ValueError(`item ${number} (${sku}) has an invalid quantity: ${pyRepr(qty)}`);
    }
    return { line: number, sku, qty, unit_cents: cents(item) };
  });
}

function price_line(line) {
  const gross = line.qty * line.unit_cents;
  const discount = line.qty >= BULK_QTY ? Math.floor((gross * BULK_DISCOUNT_PERCENT) / 100) : 0;
  return { line: line.line, sku: line.sku, gross_cents: gross, discount_cents: discount, net_cents: gross - discount };
}

function reserve_stock(line) {
  const warehouse = WAREHOUSES[crc32(line.sku) % WAREHOUSES.length];
  return { line: line.line, sku: line.sku, qty: line.qty, warehouse };
}

function total(input) {
  const priced = input.price_line;
  const reserved = input.reserve_stock;
  if (priced.map((p) => p.line).join() !== reserved.map((r) => r.line).join()) {
    throw new ValueError('priced and reserved lines do not match');
  }
  const sum = (values) => values.reduce((a, b) => a + b, 0);
  const net = sum(priced.map((p) => p.net_cents));
  const tax = Math.floor((net * TAX_BASIS_POINTS + 5000) / 10000);
  return {
    order_id: input.run.order_id === undefined ? null : input.run.order_id,
    lines: priced.length,
    discount_cents: sum(priced.map((p) => p.discount_cents)),
    net_cents: net,
    tax_cents: tax,
    total_cents: net + tax,
    warehouses: [...new Set(reserved.map((r) => r.warehouse))].sort(),
  };
}

function loyalty_bonus(input) {
  return { points: Math.floor(input.total.total_cents / 100) };
}

function send_confirmation(input) {
  const summary = input.total;
  const customer = input.run.customer === undefined ? {} : input.run.customer;
  const order = pyStr(summary.order_id);
  let text = `Order ${order}: ${summary.lines} line(s), total ${money(summary.total_cents)}`;
  const bonus = input.loyalty_bonus; // absent when the step was skipped
  if (bonus !== undefined && bonus !== null) text += `; you earned ${bonus.points} loyalty points`;
  return { to: customer.email === undefined ? null : customer.email, subject: `Order ${order}`, text };
}

// A price ("12.50", 12.5) in whole cents, rounded half to even, computed
// exactly on the decimal digits as Python's Decimal does.
function cents(item) {
  const raw = item.unit_price === undefined ? null : item.unit_price;
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:e([+-]?\d+))?$/i.exec(pyStr(raw).trim());
  if (!m || (m[2] + (m[3] || '')).length === 0 || (m[1] === '-' && /[1-9]/.test(m[2] + (m[3] || '')))) {
    throw new ValueError(`invalid unit price ${pyRepr(raw)} for ${pyStr(item.sku)}`);
  }
  const fraction = m[3] || '';
  const digits = BigInt(m[2] + fraction);
  const shift = Number(m[4] || 0) - fraction.length + 2; // value * 100 = digits * 10^shift
  if (shift >= 0) return Number(digits * 10n ** BigInt(shift));
  const unit = 10n ** BigInt(-shift);
  const [q, r] = [digits / unit, digits % unit];
  return Number(2n * r > unit || (2n * r === unit && q % 2n === 1n) ? q + 1n : q);
}

function money(totalCents) {
  return `${Math.floor(totalCents / 100)}.${String(totalCents % 100).padStart(2, '0')}`;
}

// zlib.crc32 (what the Python handler hashes the sku with), over UTF-8 bytes.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  for (let k = 0; k < 8; k++) n = n & 1 ? 0xedb88320 ^ (n >>> 1) : n >>> 1;
  return n >>> 0;
});
function crc32(text) {
  let crc = 0xffffffff;
  for (const byte of Buffer.from(text, 'utf8')) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// Python's str() and repr() of a decoded JSON scalar, for messages.
function pyStr(value) {
  if (value === null) return 'None';
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}
function pyRepr(value) {
  if (typeof value !== 'string') return pyStr(value);
  const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
  const escaped = value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
  return quote + (quote === "'" ? escaped.replace(/'/g, "\\'") : escaped) + quote;
}

module.exports = {
  order: { validate_order, price_line, reserve_stock, total, loyalty_bonus, send_confirmation },
};
