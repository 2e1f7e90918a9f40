// An independent reader of this tool's Arrow output: the npm package apache-arrow (Arrow's JavaScript
// implementation), used by the tests to check schemas and values without our own Arrow code.
//   node read-arrow.cjs [FILE]        reads an IPC stream or file (FILE, or standard input)
// Prints JSON lines: first {"schema": [...], "metadata": {...}, "format": "stream"|"file"}, then one
// {"batch": i, "received_ns": "...", "rows": [[...], ...]} per record batch, as soon as it is read
// (received_ns: the wall clock when the batch arrived, for live reads). 64-bit integers and timestamps
// are printed exactly, as decimal strings; binaries as hex.
'use strict';
const fs = require('fs');
const { RecordBatchReader, Type } = require('apache-arrow');

function nowNs() {
  return (BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n).toString();
}

function typeName(t) {
  switch (t.typeId) {
    case Type.Timestamp: return `timestamp[${['s', 'ms', 'us', 'ns'][t.unit]}${t.timezone ? ',' + t.timezone : ''}]`;
    case Type.Int: return `${t.isSigned ? 'int' : 'uint'}${t.bitWidth}`;
    case Type.Float: return ['float16', 'float32', 'float64'][t.precision];
    case Type.Utf8: return 'utf8';
    case Type.LargeUtf8: return 'large_utf8';
    case Type.Binary: return 'binary';
    case Type.Bool: return 'bool';
    case Type.Decimal: return `decimal${t.bitWidth}(${t.precision},${t.scale})`;
    case Type.Date: return t.unit === 0 ? 'date32' : 'date64';
    case Type.List: return `list<${typeName(t.children[0].type)}>`;
    default: return String(t);
  }
}

function cell(data, i) {
  const t = data.type;
  const at = data.offset + i;
  if (data.nullCount > 0 && data.nullBitmap && data.nullBitmap.length > 0) {
    const byte = data.nullBitmap[at >> 3];
    if ((byte & (1 << (at % 8))) === 0) return null;
  }
  switch (t.typeId) {
    case Type.Timestamp:
      if (data.values instanceof BigInt64Array) return data.values[at].toString();
      { // older layouts: two int32 per value
        const lo = BigInt(data.values[2 * at] >>> 0), hi = BigInt(data.values[2 * at + 1]);
        return ((hi << 32n) | lo).toString();
      }
    case Type.Int:
      if (t.bitWidth === 64) {
        const v = data.values[at];
        if (typeof v === 'bigint') return v.toString();
        const lo = BigInt(data.values[2 * at] >>> 0), hi = BigInt(t.isSigned ? data.values[2 * at + 1] : data.values[2 * at + 1] >>> 0);
        return ((hi << 32n) | lo).toString();
      }
      return data.values[at];
    case Type.Float: return data.values[at];
    case Type.Bool: return ((data.values[at >> 3] >> (at % 8)) & 1) === 1;
    case Type.Utf8: {
      const s = data.valueOffsets[at], e = data.valueOffsets[at + 1];
      return Buffer.from(data.values.subarray(s, e)).toString('utf8');
    }
    case Type.Binary: {
      const s = data.valueOffsets[at], e = data.valueOffsets[at + 1];
      return Buffer.from(data.values.subarray(s, e)).toString('hex');
    }
    default: {
      const v = require('apache-arrow').makeVector(data).get(i);
      return v === null || v === undefined ? null : String(v);
    }
  }
}

async function main() {
  const path = process.argv[2];
  let source;
  let format = 'stream';
  if (path) {
    const buf = fs.readFileSync(path);
    if (buf.subarray(0, 6).toString('latin1') === 'ARROW1') format = 'file';
    source = buf;
  } else {
    source = process.stdin;
  }
  const reader = await RecordBatchReader.from(source);
  await reader.open();
  const schema = reader.schema;
  const meta = {};
  for (const [k, v] of schema.metadata) meta[k] = v;
  process.stdout.write(JSON.stringify({
    format,
    schema: schema.fields.map(f => ({ name: f.name, type: typeName(f.type), nullable: f.nullable })),
    metadata: meta,
  }) + '\n');
  let n = 0;
  for await (const batch of reader) {
    const received = nowNs();
    const cols = schema.fields.map((_, j) => batch.getChildAt(j).data[0]);
    const rows = [];
    for (let i = 0; i < batch.numRows; i++) rows.push(cols.map(d => cell(d, i)));
    process.stdout.write(JSON.stringify({ batch: n++, received_ns: received, rows }) + '\n');
  }
}

main().catch(e => { process.stderr.write(`error: ${e && e.stack || e}\n`); process.exit(1); });
