"""The ground floor every layer may use: safe writes, checksums, checkpoints, reuse keys
and the embedding-table format.

* :mod:`.atomic`: write to a temporary name, then rename (no reader sees half a file);
* :mod:`.checksum`: content checksums and cheap fingerprints of input files;
* :mod:`.checkpoint`: named tensors plus JSON metadata, loaded with ``weights_only=True``;
* :mod:`.reuse`: skip a finished step only when its config and inputs are unchanged;
* :mod:`.embedding_table`: the Parquet table of one embedding per stimulus.
"""
