/* inject_cli: `mtlsd inject` (docs/injection.md): Kubernetes objects in (YAML or JSON, one
 * or several documents, a JSON stream, `kind: List`), the same objects out in the same
 * format (several in JSON as one List), with every Pod and workload injected (the inject
 * module) and every other object passed through value for value. What happened to each
 * object goes to stderr. Nothing is written (but the problem) when any document is bad;
 * time is linear in the size of the input, and one document's tree at a time is in
 * memory. */
#ifndef MTLSD_INJECT_CLI_H
#define MTLSD_INJECT_CLI_H

/* inject_main runs `mtlsd inject ...`: |argv[0]| is "inject". Returns the exit code: 0,
 * 1 when an object was refused (it is written out unchanged), 2 on bad input or usage. */
int inject_main(int argc, char **argv);

#endif
