"""Fn's image cleaner (FN_IMAGE_CLEAN_MAX_SIZE): a runner keeps the images it runs under a size budget.

A runner that serves many functions collects their images until the disk fills. With a budget,
the images this runner has run are tracked; once their total size is over it, the ones no
container of ours uses are removed, least recently used first, except those tagged with one of
FN_IMAGE_CLEAN_EXEMPT_TAGS. Images the runner never ran (other users of a shared engine, an
operator's own) are not its to remove. Sizes are Docker's image sizes, shared layers counted in
each image, as in Fn: the budget errs on the side of removing too much, never too little.

This module is the bookkeeping; the docker driver feeds it and does the removals off the loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import attrs


def normalise_tag(tag: str) -> str:
    """``name`` means ``name:latest``, as in ``docker run``."""
    last = tag.rsplit("/", 1)[-1]
    return tag if ":" in last or "@" in last else f"{tag}:latest"


@attrs.define
class CachedImage:
    id: str
    size: int
    tags: tuple[str, ...]
    in_use: int = 0  # containers of ours running it
    last_used: int = 0  # order of last use (a counter: a clock may not move between two launches)


class ImageCache:
    def __init__(self, max_size: int, exempt_tags: Iterable[str] = ()) -> None:
        self.max_size = max_size
        self.exempt_tags = frozenset(normalise_tag(t) for t in exempt_tags)
        self.images: dict[str, CachedImage] = {}
        self._uses = itertools.count(1)

    @property
    def total_size(self) -> int:
        return sum(image.size for image in self.images.values())

    def busy(self, image_id: str, size: int, tags: Iterable[str]) -> None:
        """A container of ours started from the image."""
        image = self.images.get(image_id)
        if image is None:
            image = self.images[image_id] = CachedImage(image_id, size, tuple(tags))
        image.in_use += 1
        image.last_used = next(self._uses)

    def free(self, image_id: str) -> None:
        """A container of ours that ran the image is gone."""
        image = self.images.get(image_id)
        if image is not None and image.in_use:
            image.in_use -= 1

    def exempt(self, image: CachedImage) -> bool:
        return not self.exempt_tags.isdisjoint(image.tags)

    def victims(self) -> list[CachedImage]:
        """What to remove to get back under the budget: unused, not exempt, least recently used first."""
        excess = self.total_size - self.max_size
        chosen: list[CachedImage] = []
        candidates = sorted(
            (i for i in self.images.values() if not i.in_use and not self.exempt(i)), key=lambda i: i.last_used
        )
        for image in candidates:
            if excess <= 0:
                break
            chosen.append(image)
            excess -= image.size
        return chosen

    def removed(self, image_id: str) -> None:
        self.images.pop(image_id, None)

    def kept(self, image_id: str) -> None:
        """The engine would not remove it (a container not ours uses it): try the others first next time."""
        image = self.images.get(image_id)
        if image is not None:
            image.last_used = next(self._uses)
