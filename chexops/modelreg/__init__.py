"""The model registry after a study: listing versions, promotion with statistical evidence, rollback.

`store` opens the registry and reads what is in it; `promotion` compares a candidate with the version holding an
alias on the same test studies and moves the alias (recording every decision as version tags); `commands` holds
the `chexops registry list` and `chexops promote` commands. mlflow is imported inside functions only.
"""

from __future__ import annotations
