"""Figures for the library's PNG writers, kept apart from pyplot."""


def subplots(nrows=1, ncols=1, *, figsize=None, **kwargs):
    """`(fig, axes)` as `matplotlib.pyplot.subplots` gives them, on a `Figure` that pyplot
    does not manage.

    Saving such a figure needs no backend, so a plotting function built on it leaves the
    caller's backend as it was (a notebook's inline one, say: `matplotlib.use("Agg")` would
    switch it off for the rest of the session) and leaks no figure into pyplot's list (nothing
    to close).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)
