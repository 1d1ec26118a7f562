"""The paper's evaluation protocols (Sec. IV.D-F) as resumable sequences of real ``swift`` / ``swift-ssid`` runs.

Every run file these drivers write is an ordinary ``swift-ssid retrieve`` run whose rows carry the protocol's
labels in ``setting`` (``swift-ssid retrieve --setting KEY=VALUE``), so ``swift-ssid table --by KEY`` tabulates
them in the paper's layout:

============  =============================================  ==========================================
protocol      what varies (one run file each)                ``setting`` of every row
============  =============================================  ==========================================
ablation      reason in training and inference / training    ``reason``: ``train+infer`` /
(Table III)   only / neither                                 ``train-only`` / ``none``; ``protocol``
zeroshot      training on the first N training images, test  ``n_train``: N; ``protocol``: ``zeroshot``
(Fig. 3)      images never memorised (``SSID_PROTOCOL``)
multilingual  query files in other languages, one English-   ``language``: the file's language;
(Table IV)    trained model                                  ``protocol``: ``multilingual``
identifiers   GRACE's identifier kinds and SSID, trained     ``kind``; ``protocol``: ``identifiers``
(Tables I-II) and retrieved alike
text          the identifier kinds on a text collection of   ``kind``; ``protocol``: ``text``
(ours)        real captions with a real LM (Table I's
              comparison on the text side)
============  =============================================  ==========================================

``reason`` and ``k`` are always written (by :class:`swift_ssid.integration.retrieval.Retriever`). Each driver writes
``<out>/run_<label>.jsonl``, ``<out>/table.md`` and ``<out>/table.csv`` (the zero-shot one also
``<out>/zeroshot.png``, R@K against N) and logs every command to ``<out>/logs/``; a re-run skips
finished training and resumes unfinished run files. Pure modules apart from the subprocesses: no torch.

One module per protocol (:mod:`.ablation`, :mod:`.zeroshot`, :mod:`.multilingual`, :mod:`.identifiers`,
:mod:`.text`) and
:mod:`.runner`, what they share (the retrieve and sft subprocesses, the tables); this package names their public
parts. The label and query checks they use live with queries and runs (:mod:`swift_ssid.core.queries`,
:mod:`swift_ssid.core.runs`).
"""

from swift_ssid.workflows.protocols.ablation import REASON_RUN_STEMS, REASON_SETTINGS, run_ablation
from swift_ssid.workflows.protocols.identifiers import (
    IDENTIFIER_KINDS,
    KindOptions,
    build_kind_index,
    run_identifiers,
    train_kind,
)
from swift_ssid.workflows.protocols.multilingual import run_multilingual
from swift_ssid.workflows.protocols.runner import (
    SFT_MARKER,
    ProtocolResult,
    RetrieveOptions,
    Training,
    retrieve,
    train_once,
    write_tables,
)
from swift_ssid.workflows.protocols.text import TextProtocolOptions, run_text_protocol
from swift_ssid.workflows.protocols.zeroshot import run_zeroshot, train_zeroshot

__all__ = [
    "IDENTIFIER_KINDS",
    "REASON_RUN_STEMS",
    "REASON_SETTINGS",
    "SFT_MARKER",
    "KindOptions",
    "TextProtocolOptions",
    "ProtocolResult",
    "RetrieveOptions",
    "Training",
    "build_kind_index",
    "retrieve",
    "run_ablation",
    "run_identifiers",
    "run_multilingual",
    "run_text_protocol",
    "run_zeroshot",
    "train_kind",
    "train_once",
    "train_zeroshot",
    "write_tables",
]
