"""``srghn-ctl``'s commands, one module per group of its help (``srghn.cli`` registers them): parse, call the
library, print. Heavy imports (torch, gymnasium, MuJoCo) happen inside the commands, so that ``srghn-ctl --help``
stays fast; the modules shared by all of them (:mod:`.console`, :mod:`.options`, :mod:`.tables`,
:mod:`.progress`, :mod:`.events`) import only typer and rich."""
