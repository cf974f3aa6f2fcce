"""Series-wide entity resolution: one entity per character, place or thing across all books.

Why it works this way: docs/architecture.md, "Graph build".
"""

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fantasy_kg.domain.graph.names import PERSON_TYPE_NAMES, NameKeys, id_key, name_keys, snake_id
from fantasy_kg.domain.graph.naming import (
    DOMINANCE_MIN,
    DOMINANCE_RATIO,
    choose_name,
    join_dominant_names,
    majority_types,
)
from fantasy_kg.domain.graph.records import EntityRecord, MergeDecision
from fantasy_kg.domain.schemas import CanonicalRule, Ontology
from fantasy_kg.domain.unionfind import find_root

__all__ = [
    "Cluster",
    "EntityRecord",
    "MergeDecision",
    "Resolution",
    "person_types",
    "resolve_entities",
]

_PERSON_RELATIONS = ("PARENT_OF", "SIBLING_OF", "SPOUSE_OF")


@dataclass(slots=True)
class Cluster:
    """A resolved entity: its id, name, type and member instances."""

    entity_id: str
    name: str
    type: str
    rule_id: str | None
    members: list[int]
    ambiguous_with: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Resolution:
    """Result of :func:`resolve_entities`."""

    cluster_of: list[int]
    clusters: list[Cluster]
    decisions: list[MergeDecision]
    _lookup: dict[str, set[int]]

    def entity_id_of(self, record_index: int) -> str:
        """Canonical entity id of an instance."""
        return self.clusters[self.cluster_of[record_index]].entity_id

    def lookup(self, raw: str) -> str | None:
        """Series-wide lookup of an id or name that was not an entity of its own result.

        Returns the canonical id when exactly one entity answers to ``raw`` (or, among several,
        exactly one has that very id), else ``None``.
        """
        key = id_key(raw)
        found = self._lookup.get(key)
        if not found:
            return None
        if len(found) == 1:
            return self.clusters[next(iter(found))].entity_id
        exact = [c for c in found if id_key(self.clusters[c].entity_id) == key]
        return self.clusters[exact[0]].entity_id if len(exact) == 1 else None


def person_types(ontology: Ontology) -> frozenset[str]:
    """Entity types whose names behave like personal names (titles, first/last names).

    A type is person-like if its name says so (Character, Person, ...), if family relationships
    start from it, or if its parent type is person-like.
    """
    found = {t.name for t in ontology.entity_types if t.name.lower() in PERSON_TYPE_NAMES}
    for rel in ontology.relationship_types:
        if rel.name.upper() in _PERSON_RELATIONS:
            found.update(rel.source_types)
    changed = True
    while changed:
        changed = False
        for t in ontology.entity_types:
            if t.parent in found and t.name not in found:
                found.add(t.name)
                changed = True
    if not ontology.entity_types:
        found.update({"Character", "Person"})
    return frozenset(found)


class _UnionFind:
    """Union-find over instances with per-cluster constraint state.

    Constraint state lives on roots: the set of canonical rules, the do-not-merge identities and
    the instances related to a member (contradicting relations). Sets are merged small-to-large.
    """

    def __init__(
        self,
        records: Sequence[EntityRecord],
        rule_of: list[str | None],
        dnm_groups: dict[str, list[int]],
        neighbours: dict[int, set[int]],
    ) -> None:
        n = len(records)
        self.parent = list(range(n))
        self.size = [1] * n
        self.rules: dict[int, set[str]] = {}
        self.dnm: dict[int, dict[int, set[str]]] = {}
        self.neigh: dict[int, set[int]] = {}
        for i, rule in enumerate(rule_of):
            if rule is not None:
                self.rules[i] = {rule}
        if dnm_groups:
            for i, rec in enumerate(records):
                idents = {id_key(rec.id).replace(" ", "_")}
                if rule_of[i] is not None:
                    idents.add(rule_of[i] or "")
                tags: dict[int, set[str]] = {}
                for ident in idents:
                    for group in dnm_groups.get(ident, ()):
                        tags.setdefault(group, set()).add(ident)
                if tags:
                    self.dnm[i] = tags
        # The caller hands its neighbour sets over; unions merge them in place.
        self.neigh.update(neighbours)

    def find(self, i: int) -> int:
        return find_root(self.parent, i)

    def conflict(self, ra: int, rb: int, *, relations: bool = True) -> str | None:
        """Why the clusters rooted at ``ra`` and ``rb`` must not be merged, or ``None``.

        ``relations=False`` skips the contradicting-relation check: a canonical rule written by
        the user outranks a relationship the model drew between two names of one person.
        """
        rules_a, rules_b = self.rules.get(ra), self.rules.get(rb)
        if rules_a and rules_b and rules_a != rules_b:
            return "rule_conflict"
        dnm_a, dnm_b = self.dnm.get(ra), self.dnm.get(rb)
        if dnm_a and dnm_b:
            for group, ids in dnm_a.items():
                other = dnm_b.get(group)
                if other and len(ids | other) > 1:
                    return "do_not_merge"
        # Relations are symmetric, so checking the smaller side is enough.
        na, nb = self.neigh.get(ra), self.neigh.get(rb)
        if relations and na and nb:
            small, other_root = (na, rb) if len(na) <= len(nb) else (nb, ra)
            if any(self.find(x) == other_root for x in small):
                return "contradicting_relation"
        return None

    def union(self, ra: int, rb: int) -> int:
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        rsrc = self.rules.pop(rb, None)
        if rsrc:
            self.rules.setdefault(ra, set()).update(rsrc)
        nsrc = self.neigh.pop(rb, None)
        if nsrc:
            ndst = self.neigh.setdefault(ra, set())
            if len(ndst) < len(nsrc):
                ndst, nsrc = nsrc, ndst
                self.neigh[ra] = ndst
            ndst.update(nsrc)
        dsrc = self.dnm.pop(rb, None)
        if dsrc:
            dst = self.dnm.setdefault(ra, {})
            for group, ids in dsrc.items():
                dst.setdefault(group, set()).update(ids)
        return ra


@dataclass(slots=True)
class _RuleIndex:
    by_id: dict[str, CanonicalRule]
    by_key: dict[tuple[str, str], set[str]]  # (type, key) -> rule ids


def _rule_index(ontology: Ontology, persons: frozenset[str]) -> _RuleIndex:
    by_id: dict[str, CanonicalRule] = {}
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rule in ontology.canonical_rules:
        by_id[rule.canonical_id] = rule
        person = rule.entity_type in persons
        for surface in (rule.canonical_name, rule.canonical_id.replace("_", " ")):
            keys = name_keys(surface, person=person)
            by_key[(rule.entity_type, keys.full)].add(rule.canonical_id)
            if keys.core_tokens > 1:
                by_key[(rule.entity_type, keys.core)].add(rule.canonical_id)
        for alias in rule.aliases:
            keys = name_keys(alias, person=person)
            if keys.full and not keys.only_titles:
                by_key[(rule.entity_type, keys.full)].add(rule.canonical_id)
            if keys.core_tokens > 1:
                by_key[(rule.entity_type, keys.core)].add(rule.canonical_id)
    return _RuleIndex(by_id=by_id, by_key=dict(by_key))


def _match_rule(
    rec: EntityRecord, keys: list[tuple[str, NameKeys]], index: _RuleIndex
) -> tuple[str, str] | None:
    """Find the canonical rule of an instance: by id, then by name, then by a unique alias."""
    ent = rec
    snake = id_key(ent.id).replace(" ", "_")
    rule = index.by_id.get(snake)
    if rule is not None and rule.entity_type == ent.type:
        return rule.canonical_id, f"id {ent.id!r}"
    for kind in ("name", "alias"):
        hits: set[str] = set()
        via = ""
        for k, nk in keys:
            if k != kind:
                continue
            for key in {nk.full, nk.core}:
                found = index.by_key.get((ent.type, key))
                if found:
                    hits |= found
                    via = via or key
        if len(hits) == 1:
            return next(iter(hits)), f"{kind} {via!r}"
    return None


def _surface_keys(ent: EntityRecord, person: bool) -> list[tuple[str, NameKeys]]:
    """``(kind, keys)`` for the name, the id, the aliases and the mention surfaces."""
    out = [
        ("name", _keys(ent.name, person)),
        ("id", _keys(ent.id.replace("_", " "), person)),
    ]
    seen = {ent.name}
    for alias in ent.aliases:
        if alias not in seen:
            seen.add(alias)
            out.append(("alias", _keys(alias, person)))
    for surface in ent.surfaces:
        if surface and surface not in seen:
            seen.add(surface)
            out.append(("alias", _keys(surface, person)))
    return out


def _keys(name: str, person: bool) -> NameKeys:
    """Name keys; a person's role phrase keeps its title ("Queen of Ev" is not "of Ev").

    Stripping the title of "King of Ev", "Queen of Ev" and "Prince of Ev" leaves the same key
    "of ev" for three people, and "Wizard of Oz" would meet "Princess of Oz": a title followed
    by "of" is the whole name.
    """
    keys = name_keys(name, person=person)
    if person and keys.core.startswith("of "):
        return name_keys(name, person=False)
    return keys


def resolve_entities(
    records: Sequence[EntityRecord],
    ontology: Ontology,
    related_pairs: Iterable[tuple[int, int]] = (),
) -> Resolution:
    """Cluster entity instances into series-wide entities.

    Args:
        records: All entity instances of the series in story order (``index`` = position).
        ontology: Supplies canonical rules, do-not-merge rules and the person-like types.
        related_pairs: Pairs of instance indexes that the model related to each other within one
            section: such instances are different entities.

    Returns:
        The clustering with canonical ids, and every merge decision with its reason.
    """
    persons = person_types(ontology)
    retyped = majority_types(records, persons)
    rules = _rule_index(ontology, persons)
    dnm_groups: dict[str, list[int]] = defaultdict(list)
    for gi, dnm in enumerate(ontology.do_not_merge):
        for ident in dnm.ids:
            dnm_groups[id_key(ident).replace(" ", "_")].append(gi)
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in related_pairs:
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)

    # Keys and rule matches depend only on an instance's names, and main characters repeat the
    # same names in every section: compute them once per distinct signature.
    keys_of: list[list[tuple[str, NameKeys]]] = []
    rule_of: list[str | None] = []
    rule_via: list[str] = []
    by_signature: dict[tuple[Any, ...], tuple[list[tuple[str, NameKeys]], tuple[str, str] | None]]
    by_signature = {}
    for rec in records:
        sig = (rec.type, rec.id, rec.name, rec.aliases, rec.surfaces)
        cached = by_signature.get(sig)
        if cached is None:
            keys = _surface_keys(rec, rec.type in persons)
            cached = by_signature[sig] = (keys, _match_rule(rec, keys, rules))
        keys_of.append(cached[0])
        matched = cached[1]
        rule_of.append(matched[0] if matched else None)
        rule_via.append(matched[1] if matched else "")
    del by_signature

    # Weak keys: single tokens that start or end a longer (multi-word) core name of the type.
    long_names: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for rec, keys in zip(records, keys_of, strict=True):
        if rec.type not in persons:
            continue
        for kind, nk in keys:
            if nk.core_tokens > 1 and (kind in ("name", "id") or nk.proper):
                toks = nk.core.split(" ")
                long_names[rec.type][toks[0]].add(nk.core)
                long_names[rec.type][toks[-1]].add(nk.core)
    for rule in ontology.canonical_rules:
        if rule.entity_type in persons:
            nk = name_keys(rule.canonical_name, person=True)
            if nk.core_tokens > 1:
                toks = nk.core.split(" ")
                long_names[rule.entity_type][toks[0]].add(nk.core)
                long_names[rule.entity_type][toks[-1]].add(nk.core)

    def is_weak(etype: str, nk: NameKeys) -> bool:
        return nk.core_tokens == 1 and etype in persons and nk.core in long_names.get(etype, {})

    uf = _UnionFind(records, rule_of, dnm_groups, neighbours)
    decisions: list[MergeDecision] = list(retyped)
    refused: set[tuple[int, int, str]] = set()

    # Per-cluster names, kept only for clusters that were merged (singletons are computed from
    # their own keys): every name/id key, and the multi-word personal names among them.
    primary_of: dict[int, set[str]] = {}
    full_of: dict[int, set[str]] = {}

    def names(root: int) -> tuple[set[str], set[str]]:
        if root not in primary_of:
            prim: set[str] = set()
            full: set[str] = set()
            for kind, nk in keys_of[root]:
                if kind in ("name", "id"):
                    prim.update((nk.full, nk.core))
                    if nk.core_tokens > 1 and records[root].type in persons:
                        full.add(nk.core)
            return prim, full
        return primary_of[root], full_of[root]

    def join(
        a: int, b: int, rule: str, key: str, detail: str = "", *, alias_link: bool = False
    ) -> bool:
        ra, rb = uf.find(a), uf.find(b)
        if ra == rb:
            return True
        why = uf.conflict(ra, rb, relations=rule != "canonical_rule")
        prim_a, full_a = names(ra)
        prim_b, full_b = names(rb)
        if (
            why is None
            and alias_link
            and not _alias_compatible(key, prim_a, full_a, prim_b, full_b)
        ):
            why = "distinct_full_names"
        if why is not None:
            pair = (min(ra, rb), max(ra, rb), why)
            if pair not in refused:  # the same two clusters meet again under another key
                refused.add(pair)
                decisions.append(MergeDecision("kept_apart", why, key, a, b, detail))
            return False
        root = uf.union(ra, rb)
        other = rb if root == ra else ra
        primary_of[root] = prim_a | prim_b
        full_of[root] = full_a | full_b
        primary_of.pop(other, None)
        full_of.pop(other, None)
        decisions.append(MergeDecision("merged", rule, key, a, b, detail))
        return True

    # Phase 1: canonical rules.
    first_of_rule: dict[str, int] = {}
    for i, rule_id in enumerate(rule_of):
        if rule_id is None:
            continue
        if rule_id in first_of_rule:
            join(first_of_rule[rule_id], i, "canonical_rule", rule_id, rule_via[i])
        else:
            first_of_rule[rule_id] = i

    # Phases 2-4: strong keys, type-scoped.
    def strong_keys(i: int, kinds: tuple[str, ...]) -> list[str]:
        etype = records[i].type
        out: list[str] = []
        for kind, nk in keys_of[i]:
            if kind not in kinds or not nk.core or nk.only_titles:
                continue
            if kind == "alias" and not nk.proper:
                continue
            for key in (nk.full, nk.core):
                if not key or key in out:
                    continue
                if " " not in key and etype in persons and key in long_names[etype]:
                    continue  # a weak key: left to phase 5
                out.append(key)
        return out

    key_owner: dict[tuple[str, str], int] = {}
    for phase, kinds in (
        ("same_id", ("id",)),
        ("same_name", ("name",)),
        ("shared_alias", ("name", "id", "alias")),
    ):
        for i, rec in enumerate(records):
            for key in strong_keys(i, kinds):
                owner_key = (rec.type, key)
                owner = key_owner.get(owner_key)
                if owner is None:
                    key_owner[owner_key] = i
                elif phase != "shared_alias" or not _both_primary(keys_of, owner, i, key):
                    join(owner, i, phase, key, alias_link=phase == "shared_alias")

    # Phase 5: partial names. Clusters known only by a lone first or last name join the full
    # name they belong to, decided on the clusters built by phases 1-4.
    members_now: dict[int, list[int]] = defaultdict(list)
    for i in range(len(records)):
        members_now[uf.find(i)].append(i)
    cluster_keys: dict[tuple[str, str], set[int]] = defaultdict(set)
    sections_of: dict[int, list[int]] = {}
    for root, members in members_now.items():
        sections_of[root] = sorted({records[m].section_pos for m in members})
        for m in members:
            etype = records[m].type
            for kind, nk in keys_of[m]:
                if nk.core_tokens > 1 and (kind in ("name", "id") or nk.proper):
                    cluster_keys[(etype, nk.core)].add(root)
            if rule_of[m] is not None:
                rule = rules.by_id[rule_of[m] or ""]
                nk = name_keys(rule.canonical_name, person=etype in persons)
                cluster_keys[(etype, nk.core)].add(root)
    ambiguous: dict[int, set[int]] = {}
    pending: dict[tuple[str, str], int] = {}
    lone_of: dict[int, tuple[str, list[str]]] = {}
    for root in sorted(members_now, key=lambda r: members_now[r][0]):
        members = members_now[root]
        etype = records[members[0]].type
        if etype not in persons or any(rule_of[m] is not None for m in members):
            continue
        primary = [nk for m in members for kind, nk in keys_of[m] if kind in ("name", "id")]
        if any(nk.core_tokens > 1 for nk in primary):
            continue
        weak_tokens = sorted({nk.core for nk in primary if is_weak(etype, nk)})
        if weak_tokens:
            lone_of[root] = (etype, weak_tokens)
    handled = join_dominant_names(lone_of, members_now, long_names, cluster_keys, join)
    for root in sorted(lone_of, key=lambda r: members_now[r][0]):
        if root in handled:
            continue
        members = members_now[root]
        etype, weak_tokens = lone_of[root]
        per_token: list[set[int]] = []
        for token in weak_tokens:
            found: set[int] = set()
            for long in long_names[etype].get(token, ()):
                found |= {uf.find(r) for r in cluster_keys.get((etype, long), ())}
            found.discard(uf.find(root))
            per_token.append(found)
        candidates = set().union(*per_token)
        if len(candidates) > 1 and len(per_token) > 1:
            narrowed = set.intersection(*per_token)
            candidates = narrowed or candidates
        chosen, how = _pick_candidate(candidates, sections_of[root], sections_of)
        if chosen is None and len(candidates) > 1:
            # No section tells them apart: a full name that holds far more instances than
            # every other one with this word is the one the series means ("Dorothy Gale" with
            # 50 sections against a stray "Dorothy Tries" heading).
            by_size = sorted(((uf.size[c], c) for c in candidates), reverse=True)
            if by_size[0][0] >= DOMINANCE_MIN and by_size[0][0] >= DOMINANCE_RATIO * sum(
                n for n, _ in by_size[1:]
            ):
                chosen, how = by_size[0][1], "partial_name_dominant"
        token = weak_tokens[0]
        if chosen is not None and join(chosen, members[0], how, token):
            continue
        if len(candidates) > 1:
            ambiguous[members[0]] = candidates
        owner = pending.get((etype, token))
        if owner is None:
            pending[(etype, token)] = members[0]
        else:
            join(owner, members[0], "same_name_ambiguous" if candidates else "same_name", token)

    return _finish(records, uf, decisions, rule_of, rules, keys_of, ambiguous, persons)


def _alias_compatible(
    key: str, prim_a: set[str], full_a: set[str], prim_b: set[str], full_b: set[str]
) -> bool:
    """Whether an alias link may join two clusters, judged by their full personal names.

    One wrong alias in one section must not merge two main characters for the whole series. An
    alias joins freely a cluster that is known *only* by that alias ("the Widow Queen"); otherwise
    the two clusters' full names ("Aldous Thorne", "Corin Thorne") must overlap or one side must
    have none.
    """

    def compatible(x: set[str], y: set[str]) -> bool:
        return not x or not y or not x.isdisjoint(y)

    if key in prim_a or key in prim_b:
        return (key in prim_a and compatible(full_a - {key}, full_b)) or (
            key in prim_b and compatible(full_b - {key}, full_a)
        )
    return compatible(full_a, full_b)


def _both_primary(keys_of: list[list[tuple[str, NameKeys]]], a: int, b: int, key: str) -> bool:
    """Whether ``key`` was already tried for ``a`` and ``b`` as a name or id (phases 2-3)."""

    def primary(i: int) -> bool:
        return any(kind in ("name", "id") and key in (nk.full, nk.core) for kind, nk in keys_of[i])

    return primary(a) and primary(b)


def _pick_candidate(
    candidates: set[int], positions: list[int], sections_of: dict[int, list[int]]
) -> tuple[int | None, str]:
    """Choose the full name a lone first/last name belongs to, or ``None`` if unclear.

    Args:
        candidates: Roots of the clusters whose full name contains the lone name.
        positions: Sorted section positions where the lone name appears.
        sections_of: Sorted section positions of every cluster.
    """
    if len(candidates) == 1:
        return next(iter(candidates)), "partial_name"
    if not candidates:
        return None, ""
    pool = sorted(candidates)
    shared = [(sum(_contains(sections_of[c], p) for p in positions), c) for c in pool]
    shared.sort(reverse=True)
    if shared[0][0] > 0 and (len(shared) == 1 or shared[0][0] > shared[1][0]):
        return shared[0][1], "partial_name_same_section"
    dist = sorted((min(_distance(sections_of[c], p) for p in positions), c) for c in pool)
    if dist[0][0] < dist[1][0]:
        return dist[0][1], "partial_name_nearest_section"
    return None, ""


def _contains(sorted_positions: list[int], pos: int) -> bool:
    i = bisect.bisect_left(sorted_positions, pos)
    return i < len(sorted_positions) and sorted_positions[i] == pos


def _distance(sorted_positions: list[int], pos: int) -> int:
    i = bisect.bisect_left(sorted_positions, pos)
    best = 1 << 30
    if i < len(sorted_positions):
        best = sorted_positions[i] - pos
    if i > 0:
        best = min(best, pos - sorted_positions[i - 1])
    return best


def _finish(
    records: Sequence[EntityRecord],
    uf: _UnionFind,
    decisions: list[MergeDecision],
    rule_of: list[str | None],
    rules: _RuleIndex,
    keys_of: list[list[tuple[str, NameKeys]]],
    ambiguous: dict[int, set[int]],
    persons: frozenset[str],
) -> Resolution:
    """Name the clusters (rule, else the most telling name), make ids unique, build lookups."""
    members_of: dict[int, list[int]] = defaultdict(list)
    for i in range(len(records)):
        members_of[uf.find(i)].append(i)
    roots = sorted(members_of, key=lambda r: members_of[r][0])  # by first appearance
    cluster_index = {root: ci for ci, root in enumerate(roots)}
    cluster_of = [cluster_index[uf.find(i)] for i in range(len(records))]

    clusters: list[Cluster] = []
    used: set[str] = set()
    for root in roots:
        members = members_of[root]
        first = records[members[0]]
        rule_ids = sorted({r for m in members if (r := rule_of[m]) is not None})
        if rule_ids:
            rule = rules.by_id[rule_ids[0]]
            base_id, name = rule.canonical_id, rule.canonical_name
        else:
            base_id, name = choose_name(records, members, first.type in persons)
        entity_id = base_id
        if entity_id in used:
            entity_id = f"{base_id}__{snake_id(first.type)}"
            n = 2
            while entity_id in used:
                entity_id = f"{base_id}_{n}"
                n += 1
        used.add(entity_id)
        rule_id = rule_ids[0] if rule_ids else None
        clusters.append(Cluster(entity_id, name, first.type, rule_id, members))

    for i, cands in ambiguous.items():
        cluster = clusters[cluster_of[i]]
        ids = sorted({clusters[cluster_index[uf.find(c)]].entity_id for c in cands})
        cluster.ambiguous_with = sorted(set(cluster.ambiguous_with) | set(ids))

    # Type conflicts: the same name under two types stays two entities; say so.
    by_key: dict[str, set[int]] = defaultdict(set)
    for i, rec in enumerate(records):
        by_key[id_key(rec.id)].add(cluster_of[i])
    for key, cis in sorted(by_key.items()):
        types = {clusters[c].type for c in cis}
        if len(types) > 1:
            ordered = sorted(cis)
            for other in ordered[1:]:
                if clusters[other].type != clusters[ordered[0]].type:
                    decisions.append(
                        MergeDecision(
                            "kept_apart",
                            "type_conflict",
                            key,
                            clusters[ordered[0]].members[0],
                            clusters[other].members[0],
                            f"{clusters[ordered[0]].type} vs {clusters[other].type}",
                        )
                    )

    lookup: dict[str, set[int]] = defaultdict(set)
    for i, rec in enumerate(records):
        ci = cluster_of[i]
        lookup[id_key(rec.id)].add(ci)
        for kind, nk in keys_of[i]:
            if kind == "name" and nk.core_tokens > 1:
                lookup[nk.full].add(ci)
    for ci, cluster in enumerate(clusters):
        lookup[id_key(cluster.entity_id)].add(ci)
        if cluster.rule_id is not None:
            for alias in rules.by_id[cluster.rule_id].aliases:
                nk = name_keys(alias, person=cluster.type in persons)
                if nk.core_tokens > 1:
                    lookup[nk.full].add(ci)
    return Resolution(cluster_of, clusters, decisions, dict(lookup))
