"""Loss terms (one module each) and the LossComputer that weights, warms up and sums them (``computer.py``)."""
