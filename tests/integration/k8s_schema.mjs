// A strict schema check of Kubernetes objects against the models that the npm package
// @kubernetes/client-node generates from the API's OpenAPI document: every field of
// every object must exist in its type (a typo, or a field at the wrong level, fails),
// and scalars must have their type. CRDs are out of its scope.
//
// Usage: node k8s_schema.mjs MODELS_DIR < objects.json   (a JSON array of objects)
// Prints one line per problem; exits 1 when there is any, 0 otherwise.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const modelsDir = process.argv[2];
const objects = JSON.parse(fs.readFileSync(0, 'utf8'));
const cache = new Map();

async function model(name) {
  if (!cache.has(name)) {
    const file = path.join(modelsDir, `${name}.js`);
    cache.set(name, fs.existsSync(file)
      ? (await import(pathToFileURL(file).href))[name] : null);
  }
  return cache.get(name);
}

async function check(value, type, where, problems) {
  if (value === null || type === 'any' || type === 'object') {
    return;
  }
  const scalar = { string: 'string', number: 'number', boolean: 'boolean', Date: 'string' };
  if (type in scalar) {
    if (typeof value !== scalar[type]) {
      problems.push(`${where}: expected ${type}, got ${JSON.stringify(value)}`);
    }
    return;
  }
  if (type === 'IntOrString') {
    if (typeof value !== 'string' && !Number.isInteger(value)) {
      problems.push(`${where}: expected an integer or a string`);
    }
    return;
  }
  let m = type.match(/^Array<(.+)>$/);
  if (m) {
    if (!Array.isArray(value)) {
      problems.push(`${where}: expected an array`);
      return;
    }
    for (let i = 0; i < value.length; i++) {
      await check(value[i], m[1], `${where}[${i}]`, problems);
    }
    return;
  }
  m = type.match(/^\{ \[key: string\]: (.+); \}$/);
  if (m) {
    if (typeof value !== 'object' || Array.isArray(value)) {
      problems.push(`${where}: expected a map`);
      return;
    }
    for (const [k, v] of Object.entries(value)) {
      await check(v, m[1], `${where}[${JSON.stringify(k)}]`, problems);
    }
    return;
  }
  const cls = await model(type);
  if (cls === null) {
    problems.push(`${where}: the type ${type} is not in the models`);
    return;
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push(`${where}: expected an object (${type})`);
    return;
  }
  const fields = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) {
      problems.push(`${where}.${k}: no such field in ${type}`);
    } else {
      await check(v, fields.get(k), `${where}.${k}`, problems);
    }
  }
}

const problems = [];
for (const [i, obj] of objects.entries()) {
  const name = `V1${obj.kind}`;
  if (await model(name) === null) {
    problems.push(`object ${i}: kind ${obj.kind} has no model ${name}`);
    continue;
  }
  await check(obj, name, `${obj.kind}/${obj.metadata?.name ?? i}`, problems);
}
for (const p of problems) {
  console.log(p);
}
process.exit(problems.length > 0 ? 1 : 0);
