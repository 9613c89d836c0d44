"""The models both parties train and score with, and the registry that keeps their versions.

- `bank_features`: the bank's feature vector for a customer event and profile, and the products.
- `fedlr`: federated logistic regression between the two parties (vertical, Paillier):
  `BankParty`, `PartnerParty`, the driver `train_federated` and `predict`; its docstring says
  what each side learns. Its messages are services/protocol/exchange_messages.py's.
- `kernel`: prod_i [[r_i]]^(q_ij) for every partner feature with joint buckets (the cost centre).
- `workers`: a party's process pool for the kernel, encryption and decryption.
- `federated`: the bank's half of a deployed federated model, as scoring applies it.
- `datasets`: FATE's vertically split example data and a fixed stratified split.
- `registry`: every model version with its lineage, in the SQL database.
- `contract`: the one model contract (river's verbs) and the input checks every model shares.
- `fedlr_model`, `secureboost_model`: federated LR and SecureBoost in the contract's verbs, both
  parties in one process.
- `segmenter`: customer style types, an online clustering with stable ids.
"""
