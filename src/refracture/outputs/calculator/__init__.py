"""``refracture calculator``: the registered model in a web page served from this computer.

:class:`~refracture.outputs.calculator.form.Calculator` is the model side (form fields, refusal
of values out of range, risks, contributions, what-if curves) and
:func:`~refracture.outputs.calculator.server.make_server` its HTTP server (standard library).
"""

from refracture.outputs.calculator.form import Calculator, Field, Refused
from refracture.outputs.calculator.server import make_server

__all__ = ["Calculator", "Field", "Refused", "make_server"]
