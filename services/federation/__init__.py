"""Federated logistic regression between the bank and the partner (vertical, two-party, Paillier).

- `fedlr`: the two parties (`BankParty`, `PartnerParty`), the driver `train_federated` and
  `predict`; its docstring says who sends what and what each side learns.
- `messages`: the protocol messages as compact bytes (for the exchange topics).
- `kernel`: prod_i [[r_i]]^(q_ij) for every partner feature with joint buckets (the cost centre).
- `workers`: a party's process pool for the kernel, encryption and decryption.
- `datasets`: FATE's vertically split example data and a fixed stratified split.
"""
