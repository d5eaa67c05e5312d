"""Module-level cycles in a cargo-modules DOT graph: each `uses` edge mapped to (module of user, module of used item).

Usage: cargo modules dependencies --lib --no-externs --no-sysroot --no-owns | python3 .ci/module-cycles.py
(cargo-modules 0.27; its own --acyclic also counts edges between an item and its methods, so it cannot judge modules.)
"""
import re, sys
dot = sys.stdin.read()
nodes = {}
for m in re.finditer(r'^\s*"([^"]+)" \[label="([^"]*)"', dot, re.M):
    nodes[m.group(1)] = m.group(2)
kinds = {}
for name, label in nodes.items():
    kind = label.split('|')[0].split()
    kinds[name] = 'mod' if kind and kind[-1] in ('mod', 'crate') else 'item'
def module_of(n):
    if kinds.get(n) == 'mod':
        return n
    return n.rsplit('::', 1)[0]
edges = set()
for m in re.finditer(r'"([^"]+)" -> "([^"]+)" \[label="(\w+)"', dot):
    a, b, kind = m.groups()
    if kind != 'uses':
        continue
    ma, mb = module_of(a), module_of(b)
    if ma != mb and not mb.startswith(ma + '::') and not ma.startswith(mb + '::'):
        edges.add((ma, mb))
    elif ma != mb:
        edges.add((ma, mb))
graph = {}
for a, b in edges:
    graph.setdefault(a, set()).add(b)
    graph.setdefault(b, set())
# Tarjan
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in graph[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
for v in list(graph):
    if v not in index: strong(v)
print(f"{len(graph)} modules, {len(edges)} module-to-module use edges, {len(sccs)} cycles")
for c in sccs:
    print("cycle:", " <-> ".join(c))
    for a in c:
        for b in sorted(graph[a]):
            if b in c: print(f"   {a} -> {b}")
