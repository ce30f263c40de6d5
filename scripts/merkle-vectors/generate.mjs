// Golden vectors for src/loraloop/chain/merkle.py, made by the reference library itself.
//
// Builds StandardMerkleTree.of(values, ["uint256", "address", "uint256"]) with the library's
// default options for deterministic pseudo-random inputs and writes, per tree, the input values
// in input order, the root, the full node array, where each value sits in it, and each value's
// proof. Run `npm ci && node generate.mjs` in this folder; the output is byte-stable.

import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { StandardMerkleTree } from "@openzeppelin/merkle-tree";

const HERE = dirname(fileURLToPath(import.meta.url));
const OUTPUT = join(HERE, "..", "..", "tests", "data", "merkle_vectors.json");
const ENCODING = ["uint256", "address", "uint256"];
const SIZES = [1, 2, 3, 4, 5, 7, 8, 16, 31, 33, 64, 100, 129];
// Sizes that also get a tree with scattered (non-contiguous, shuffled) indexes.
const SCATTERED_SIZES = [1, 2, 3, 5, 7, 8, 16, 33, 100, 129];
const MAX_UINT256 = (1n << 256n) - 1n;

const library = JSON.parse(
  readFileSync(join(HERE, "node_modules", "@openzeppelin", "merkle-tree", "package.json"), "utf8"),
);

// A counter-mode SHA-256 stream: the same seed always gives the same inputs, on any machine.
function stream(seed) {
  let counter = 0;
  let pool = Buffer.alloc(0);
  return (n) => {
    while (pool.length < n) {
      const block = createHash("sha256").update(`${seed}:${counter++}`).digest();
      pool = Buffer.concat([pool, block]);
    }
    const out = pool.subarray(0, n);
    pool = pool.subarray(n);
    return Buffer.from(out);
  };
}

const big = (bytes) => (bytes.length === 0 ? 0n : BigInt("0x" + bytes.toString("hex")));
const below = (rand, n) => Number(big(rand(6)) % BigInt(n));

function amount(rand) {
  switch (below(rand, 8)) {
    case 0:
      return 0n;
    case 1:
      return MAX_UINT256;
    case 2:
      return MAX_UINT256 - big(rand(1));
    case 3:
      return big(rand(32));
    default:
      // Mostly token-sized amounts of random width (up to 2^80 wei, about 1.2 million tokens).
      return big(rand(1 + below(rand, 10)));
  }
}

function address(rand, seen) {
  // Now and then the same account is paid twice under different indexes.
  if (seen.length > 0 && below(rand, 6) === 0) return seen[below(rand, seen.length)];
  const fresh = "0x" + rand(20).toString("hex");
  seen.push(fresh);
  return fresh;
}

function scatteredIndexes(rand, n) {
  const indexes = new Set([0n, MAX_UINT256].slice(0, Math.min(n, 2)));
  while (indexes.size < n) {
    const pick = below(rand, 3);
    indexes.add(pick === 0 ? big(rand(32)) : pick === 1 ? big(rand(2)) : big(rand(8)));
  }
  const list = [...indexes];
  for (let i = list.length - 1; i > 0; i--) {
    const j = below(rand, i + 1);
    [list[i], list[j]] = [list[j], list[i]];
  }
  return list;
}

function vector(name, indexes, rand) {
  const seen = [];
  const values = indexes.map((index) => [index, address(rand, seen), amount(rand)]);
  const tree = StandardMerkleTree.of(values, ENCODING);
  const dump = tree.dump();
  return {
    name,
    values: values.map(([index, account, amt]) => [index.toString(), account, amt.toString()]),
    root: tree.root,
    tree: dump.tree,
    tree_indexes: dump.values.map((v) => v.treeIndex),
    proofs: values.map((_, i) => tree.getProof(i)),
  };
}

// JSON with one line per value, proof and node: small diffs when the library changes.
function render(value, indent = "") {
  const inner = indent + " ";
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    const flat = value.every((v) => typeof v !== "object");
    if (flat && (value.every((v) => typeof v === "number") || JSON.stringify(value).length <= 800)) {
      return JSON.stringify(value).replaceAll('","', '", "').replaceAll(/,(?=\d)/g, ", ");
    }
    return `[\n${value.map((v) => inner + render(v, inner)).join(",\n")}\n${indent}]`;
  }
  if (value !== null && typeof value === "object") {
    const fields = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${render(v, inner)}`);
    return `{\n${fields.join(",\n")}\n${indent}}`;
  }
  return JSON.stringify(value);
}

const vectors = [];
for (const n of SIZES) {
  const rand = stream(`contiguous-${n}`);
  vectors.push(vector(`contiguous-${n}`, Array.from({ length: n }, (_, i) => BigInt(i)), rand));
}
for (const n of SCATTERED_SIZES) {
  const rand = stream(`scattered-${n}`);
  vectors.push(vector(`scattered-${n}`, scatteredIndexes(rand, n), rand));
}

const document = {
  generator: `${library.name}@${library.version} StandardMerkleTree.of (default options)`,
  regenerate: "cd scripts/merkle-vectors && npm ci && node generate.mjs",
  leaf_encoding: ENCODING,
  vectors,
};
writeFileSync(OUTPUT, render(document) + "\n");
console.log(`wrote ${vectors.length} trees to ${OUTPUT}`);
