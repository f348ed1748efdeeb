"""Binary mask slice -> closed planar polygons that follow the voxel edges.

Why edges and not pixel centres: a polygon drawn through the centres of the boundary pixels leaves out half of
every boundary pixel, so a planning system that rasterizes it back (pixel centre inside polygon) loses volume;
at 4-5 mm pixels that cost a round-trip Dice of 0.65-0.75 (docs/architecture.md, "Known pitfalls"). Polygons
along the pixel edges enclose exactly the pixel centres of the mask, and no pixel centre ever lies on one of
their edges, so any centre-inside-polygon rasterizer gets the mask back exactly.

Coordinates: a vertex is ``(row, col)`` in the slice's pixel index space, with pixel ``(r, c)`` covering
``[r - 0.5, r + 0.5] x [c - 0.5, c + 0.5]``, so every vertex has half-integer coordinates.

Topology (documented behaviour):

- One polygon per outer boundary. Pixels that touch only at a corner are separate (4-connectivity): two
  diagonal neighbours give two polygons that share one vertex, never a self-crossing polygon. A region whose
  boundary touches itself at one corner (e.g. a ring closed only diagonally) gives a polygon that visits that
  vertex twice; it never crosses itself.
- Holes (a 2D hole should already be filled by postprocessing): each hole is joined to the boundary around it
  by a zero-width "keyhole" channel running along a pixel-edge line, the technique PS3.3 C.8.8.6.3 describes
  for a CLOSED_PLANAR contour with an excluded inner part. The hole loop runs the opposite way to the outer
  loop, so the polygon excludes the hole under the even-odd rule, the non-zero winding rule and for readers
  that union several contours; no pixel centre lies on the channel. We do not write the hole as a second
  contour: that relies on an exclusive-OR reading, which the standard only defines for the newer
  CLOSEDPLANAR_XOR type that older readers and validators do not know, and plastimatch for one ORs the
  contours of a slice by default (measured: the hole comes back filled). An island inside a hole is a polygon
  of its own.
- Orientation: outer boundaries run counter-clockwise as displayed with rows downwards (positive shoelace area
  with (row, col) taken as (x, y)). Vertices where the boundary runs straight on are removed; the
  U-turns at the ends of a keyhole channel stay.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Direction codes for the directed unit edges of the corner lattice: (d_row, d_col).
_DOWN, _RIGHT, _UP, _LEFT = 0, 1, 2, 3
_STEP = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], dtype=np.int64)


def _directed_edges(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All boundary edges of the padded mask ``p``, oriented with the foreground on the same side.

    Corner ``(r, c)`` of the lattice is the top-left corner of pixel ``(r, c)`` of ``p``. Around a single
    foreground pixel the edges run down its left side, right along its bottom, up its right side and left along
    its top. Returns start rows, start cols and direction codes.
    """
    fg = p[1:-1, 1:-1]
    # (foreground & background neighbour, start-corner offset (row, col), direction) for each side of a pixel
    sides = (
        (fg & ~p[1:-1, :-2], (1, 1), _DOWN),  # left side, (i, j) -> (i+1, j)
        (fg & ~p[2:, 1:-1], (2, 1), _RIGHT),  # bottom side, (i+1, j) -> (i+1, j+1)
        (fg & ~p[1:-1, 2:], (2, 2), _UP),  # right side, (i+1, j+1) -> (i, j+1)
        (fg & ~p[:-2, 1:-1], (1, 2), _LEFT),  # top side, (i, j+1) -> (i, j)
    )
    rows, cols, dirs = [], [], []
    for present, (dr, dc), direction in sides:
        ii, jj = np.nonzero(present)
        rows.append(ii + dr)
        cols.append(jj + dc)
        dirs.append(np.full(ii.size, direction))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dirs)


def _next_edges(p: np.ndarray, r: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Index of the edge that follows each edge, turning left at saddle corners (4-connectivity)."""
    width = p.shape[1] + 1
    key_of = (r * width + c) * 4 + d  # (start corner, direction) -> unique key
    order = np.argsort(key_of)
    sorted_keys = key_of[order]
    er, ec = r + _STEP[d, 0], c + _STEP[d, 1]  # end corner of each edge
    # Preference at the end corner: left turn, straight on, right turn. In this orientation (foreground on the
    # traveller's left) a left turn keeps hugging the same pixel, so corner-touching pixels stay separate.
    nxt = np.full(d.size, -1, dtype=np.int64)
    for turn in (1, 0, 3):  # +1 = left turn, 0 = straight, +3 = right turn (direction codes are anticlockwise)
        todo = nxt < 0
        if not todo.any():
            break
        want = (er[todo] * width + ec[todo]) * 4 + (d[todo] + turn) % 4
        pos = np.searchsorted(sorted_keys, want)
        pos_c = np.minimum(pos, sorted_keys.size - 1)
        found = sorted_keys[pos_c] == want
        idx = np.nonzero(todo)[0]
        nxt[idx[found]] = order[pos_c[found]]
    if (nxt < 0).any():  # cannot happen for a boundary of pixels; guard against a silent wrong contour
        raise RuntimeError("open boundary while tracing a mask")
    return nxt


class _Loops:
    """The traced boundary as a successor permutation over unit edges; holes are spliced into it in place."""

    def __init__(self, r: np.ndarray, c: np.ndarray, d: np.ndarray, nxt: np.ndarray) -> None:
        self.r, self.c, self.d = r.tolist(), c.tolist(), d.tolist()
        self.nxt = nxt.tolist()
        self.prev: list[int] = []  # filled by index_prev() when holes need splicing

    def index_prev(self) -> None:
        self.prev = [0] * len(self.nxt)
        for e, n in enumerate(self.nxt):
            self.prev[n] = e

    def link(self, a: int, b: int) -> None:
        self.nxt[a] = b
        self.prev[b] = a

    def add_edge(self, r: int, c: int, d: int) -> int:
        self.r.append(r)
        self.c.append(c)
        self.d.append(d)
        self.nxt.append(-1)
        self.prev.append(-1)
        return len(self.d) - 1

    def cycles(self) -> list[list[int]]:
        """Every cycle once, each starting at its lexicographically smallest (row, col, direction) edge."""
        visited = [False] * len(self.d)
        out = []
        for start in np.lexsort((self.d, self.c, self.r)).tolist():
            if visited[start]:
                continue
            loop, e = [], start
            while not visited[e]:
                visited[e] = True
                loop.append(e)
                e = self.nxt[e]
            out.append(loop)
        return out


def _join_holes(loops: _Loops, cycles: list[list[int]], height: int) -> bool:
    """Splice every hole cycle into the boundary straight above its top-left corner with a zero-width channel.

    The channel runs up the lattice column through the hole's top-left corner to the nearest boundary corner of
    another cycle; any boundary crossing that column has a corner on it, so the channel crosses none. Holes are
    joined top first, so a hole found above another one is already part of its outer cycle. Returns whether
    there was any hole.
    """
    r = np.asarray(loops.r)
    c = np.asarray(loops.c)
    d = np.asarray(loops.d)
    end_r, end_c = r + _STEP[d, 0], c + _STEP[d, 1]
    key = end_c * (height + 1) + end_r  # edges by end corner, column-major, to search up a column
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    cycle_of = np.empty(d.size, dtype=np.int64)
    for i, loop in enumerate(cycles):
        cycle_of[loop] = i
    term = r * end_c - end_r * c  # shoelace with (row, col) as (x, y): > 0 for outer cycles
    holes = [i for i, loop in enumerate(cycles) if term[loop].sum() < 0]
    if not holes:
        return False
    loops.index_prev()
    for i in sorted(holes, key=lambda i: (loops.r[cycles[i][0]], loops.c[cycles[i][0]])):
        out_v = cycles[i][0]  # first edge of a cycle starts at its top-left corner
        vr, vc = loops.r[out_v], loops.c[out_v]
        pos = int(np.searchsorted(sorted_key, vc * (height + 1) + vr, side="right")) - 1
        while pos >= 0 and sorted_key[pos] // (height + 1) == vc and cycle_of[order[pos]] == i:
            pos -= 1
        if pos < 0 or sorted_key[pos] // (height + 1) != vc:
            continue  # no boundary above: cannot happen for a hole; it stays a separate polygon
        e_in = int(order[pos])
        hit_r = int(end_r[e_in])
        after, in_v = loops.nxt[e_in], loops.prev[out_v]
        tail = e_in
        for row in range(hit_r, vr):  # channel down to the hole
            edge = loops.add_edge(row, vc, _DOWN)
            loops.link(tail, edge)
            tail = edge
        loops.link(tail, out_v)
        tail = in_v
        for row in range(vr, hit_r, -1):  # and back up
            edge = loops.add_edge(row, vc, _UP)
            loops.link(tail, edge)
            tail = edge
        loops.link(tail, after)
    return True


def mask_to_polygons(mask_yx: np.ndarray) -> list[np.ndarray]:
    """Closed polygons along the voxel edges of a 2D mask: a list of ``(n, 2)`` float arrays of ``(row, col)``.

    The first vertex is not repeated at the end. One polygon per outer boundary (sorted by its first vertex);
    holes are joined into their surrounding polygon (see the module docstring). An empty mask gives ``[]``.
    """
    mask = np.asarray(mask_yx, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons needs a 2D mask, got shape {mask.shape}")
    if not mask.any():
        return []
    rows_any, cols_any = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    r0, r1, c0, c1 = rows_any[0], rows_any[-1] + 1, cols_any[0], cols_any[-1] + 1
    p = np.pad(mask[r0:r1, c0:c1], 1)
    r, c, d = _directed_edges(p)
    loops = _Loops(r, c, d, _next_edges(p, r, c, d))
    cycles = loops.cycles()
    if _join_holes(loops, cycles, p.shape[0]):
        cycles = loops.cycles()
    polygons = []
    rows, cols, dirs = np.asarray(loops.r), np.asarray(loops.c), np.asarray(loops.d)
    for loop in cycles:
        idx = np.asarray(loop)
        keep = np.roll(dirs[idx], 1) != dirs[idx]  # a vertex only where the direction changes
        verts = np.stack([rows[idx][keep], cols[idx][keep]], axis=1).astype(np.float64)
        # padded corner (pr, pc) is the top-left corner of original pixel (pr - 1 + r0, pc - 1 + c0)
        polygons.append(verts + np.array([r0 - 1.5, c0 - 1.5]))
    return polygons


def polygons_to_mask(polygons_rc: Sequence[np.ndarray], shape_yx: tuple[int, int]) -> np.ndarray:
    """Rasterize polygons (``(n, 2)`` arrays of ``(row, col)`` pixel coordinates) onto a ``shape_yx`` grid.

    A pixel is set when its centre is inside under the even-odd rule taken over all the polygons together, so
    several contours on one slice combine by exclusive OR (holes written as separate contours, keyholes and
    islands all come out right). Centres exactly on an edge follow a half-open rule (on a top or right edge:
    inside; on a bottom or left edge: outside), so a polygon through pixel centres covers as many pixels as its
    area and two polygons sharing an edge never both claim its pixels. Polygon edges from
    :func:`mask_to_polygons` never pass through a centre.
    """
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons_rc if len(p) >= 3]
    if not polys or ny == 0 or nx == 0:
        return np.zeros((ny, nx), dtype=bool)
    a = np.concatenate(polys)
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polys])
    a, b = np.round(a, 6), np.round(b, 6)  # float noise must not move a vertex across a pixel centre
    sloped = a[:, 0] != b[:, 0]
    a, b = a[sloped], b[sloped]
    y_lo, y_hi = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
    # rows r (pixel centres) with y_lo <= r < y_hi, clipped to the grid
    r_start = np.clip(np.ceil(y_lo), 0, ny).astype(np.int64)
    r_stop = np.clip(np.ceil(y_hi), 0, ny).astype(np.int64)
    counts = np.maximum(r_stop - r_start, 0)
    seg = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    rows = r_start[seg] + (np.arange(seg.size) - first[seg])
    x = a[seg, 1] + (rows - a[seg, 0]) * (b[seg, 1] - a[seg, 1]) / (b[seg, 0] - a[seg, 0])
    # a crossing at x toggles every pixel centre strictly to its right
    c0 = np.clip(np.floor(x).astype(np.int64) + 1, 0, nx)
    toggles = np.bincount(rows * (nx + 1) + c0, minlength=ny * (nx + 1)).reshape(ny, nx + 1)
    return (np.cumsum(toggles, axis=1)[:, :nx] % 2).astype(bool)
