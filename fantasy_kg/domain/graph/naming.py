"""Series-wide naming rules of entity resolution: dominant names, majority types, display names.

Why: docs/architecture.md, "Graph build".
"""

from collections import defaultdict
from collections.abc import Callable, Sequence

from fantasy_kg.domain.graph.names import id_key, name_keys
from fantasy_kg.domain.graph.records import EntityRecord, MergeDecision

# A lone name dominates when its instances outnumber those of every longer name containing it
# this many times over (and there are enough of them to tell).
DOMINANCE_RATIO = 3
DOMINANCE_MIN = 6
# Long names that no one leads are strays (a heading, a glued word) when the lone name has this
# many times the instances of the largest of them.
STRAY_RATIO = 10
# A person/place type conflict is settled when one type has this many times the other's instances.
MAJORITY_RATIO = 1.25
MAJORITY_MIN = 3


def majority_types(records: Sequence[EntityRecord], persons: frozenset[str]) -> list[MergeDecision]:
    """Settle one name typed as a person in some sections and as a non-person in others.

    Every section types its names on its own, from a few sentences; "Oz" is the country in most
    sections and a person where "the Great Oz" dominates, "Dorothy" a place in a section where
    she only walks through prepositions. A name that is a person-type in some instances and
    another type in others takes the type of the clear majority of its instances (at least
    :data:`MAJORITY_RATIO` times the other, and :data:`MAJORITY_MIN` instances): the minority
    instances are retyped in place (so that every consumer of the records agrees) and each
    change is returned as an explained decision. Conflicts between two non-person types (a
    fortress and an order called Greywatch) and close calls stay apart.
    """
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_name[id_key(rec.name)].append(i)
    out: list[MergeDecision] = []
    for key, idx in by_name.items():
        counts: dict[str, int] = defaultdict(int)
        for i in idx:
            counts[records[i].type] += 1
        if len(counts) < 2 or not any(t in persons for t in counts):
            continue
        ranked = sorted(counts, key=lambda t: (-counts[t], t))
        top, second = ranked[0], ranked[1]
        if counts[top] < MAJORITY_MIN or counts[top] < MAJORITY_RATIO * counts[second]:
            continue
        if len(ranked) > 2 and (top in persons) == (second in persons):
            continue  # three-way conflicts are left alone
        first = next(i for i in idx if records[i].type == top)
        total = len(idx)
        for i in idx:
            old = records[i].type
            if old != top and (old in persons) != (top in persons):
                records[i].type = top
                out.append(
                    MergeDecision(
                        "merged",
                        "majority_type",
                        key,
                        first,
                        i,
                        f"{old} -> {top}: {counts[top]} of {total} instances say {top}",
                    )
                )
    return out


def join_dominant_names(
    lone_of: dict[int, tuple[str, list[str]]],
    members_now: dict[int, list[int]],
    long_names: dict[str, dict[str, set[str]]],
    cluster_keys: dict[tuple[str, str], set[int]],
    join: Callable[..., bool],
) -> set[int]:
    """Gather a dominant lone name ("Scarecrow", "Dorothy") into one entity.

    When the clusters known only by one lone name hold :data:`DOMINANCE_RATIO` times as many
    instances as all longer names containing it together ("Friend Scarecrow", "Scarecrow King",
    "Scarecrow Plans" from a heading), the lone name is the character's own name and the longer
    ones are glued words or rare variants: the lone clusters become one entity instead of being
    dealt out to the rare long names section by section (which split the Scarecrow into three).
    That entity also takes in the one long name that clearly leads the others ("Dorothy Gale"
    with 8 instances against "Dorothy Tries" with 2). When no long name leads, the long names
    stay apart from it and from each other, and the lone clusters are gathered only if every
    long name is a stray (:data:`STRAY_RATIO`); otherwise (two men called Tomas Reed and Tomas
    Vell, each named in a few sections) each lone cluster is left to the per-section choice.

    Returns:
        The roots of the lone clusters that were handled here.
    """
    by_token: dict[tuple[str, str], list[int]] = defaultdict(list)
    for root, (etype, tokens) in lone_of.items():
        if len(tokens) == 1:
            by_token[(etype, tokens[0])].append(root)
    handled: set[int] = set()
    for (etype, token), roots in sorted(by_token.items()):
        lone = sum(len(members_now[r]) for r in roots)
        longs: set[int] = set()
        for long in long_names[etype].get(token, ()):
            longs |= cluster_keys.get((etype, long), set())
        sizes = sorted(((len(members_now[r]), r) for r in longs - set(roots)), reverse=True)
        long_total = sum(n for n, _ in sizes)
        if lone < DOMINANCE_MIN or lone < DOMINANCE_RATIO * long_total:
            continue
        leader = sizes and sizes[0][0] >= 2 and (len(sizes) == 1 or sizes[0][0] >= 2 * sizes[1][0])
        if not leader and sizes and lone < STRAY_RATIO * sizes[0][0]:
            # Several full names of some weight and none leads (two men called Tomas): each
            # section's lone name goes to the full name of its own section, as before.
            continue
        ordered = sorted(roots, key=lambda r: members_now[r][0])
        anchor = members_now[ordered[0]][0]
        for r in ordered[1:]:
            join(anchor, members_now[r][0], "dominant_name", token)
        if leader:
            join(sizes[0][1], anchor, "dominant_name_full", token)
        handled.update(roots)
    return handled


def choose_name(
    records: Sequence[EntityRecord], members: list[int], person: bool
) -> tuple[str, str]:
    """The display name and id of a cluster without a canonical rule.

    For persons, only names used in more than a quarter as many instances as the most frequent
    one compete, and plain names beat role phrases with "of". Among those it prefers the most
    complete name (most words after titles), then the most frequent, then the earliest; the id
    is the most frequent raw id that spells that name, else the most frequent raw id (the
    model's ids are meant to be stable; a name is not an id).
    """
    stats: dict[str, list[int]] = {}
    for order, m in enumerate(members):
        name = records[m].name
        entry = stats.get(name)
        if entry is None:
            entry = stats[name] = [name_keys(name, person=person).core_tokens, 0, order]
        entry[1] += 1
    pool = list(stats)
    if person:
        # Only established names compete on completeness: a form a few sections used next to a
        # far more frequent one is a glued word ("Royal Ozma", "Tiny Trot", "Friend
        # Scarecrow") or a stray ("Ozma Two-Step"), and a role phrase ("Ruler of the Dominion
        # of Rinkitink", "Wizard of Oz") gives way to a plain name when there is one.
        top = max(entry[1] for entry in stats.values())
        pool = [n for n in stats if stats[n][1] >= 2 and 4 * stats[n][1] > top] or [
            n for n in stats if stats[n][1] == top
        ]
        plain = [n for n in pool if " of " not in f" {n.lower()} "]
        pool = plain or pool
    name = max(pool, key=lambda n: (stats[n][0], stats[n][1], -stats[n][2]))
    want = name_keys(name, person=person)
    ids: dict[str, list[int]] = {}
    for order, m in enumerate(members):
        raw = records[m].id
        entry = ids.setdefault(raw, [0, 0, order])
        entry[0] += id_key(raw) in (want.full, want.core)
        entry[1] += 1
    return max(ids, key=lambda r: (ids[r][0] > 0, ids[r][1], -ids[r][2])), name
