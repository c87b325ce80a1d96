"""The terminal gateway: the MetaTrader5 adapter (``session``), the terminal worker process
(``worker``), the pool of slots (``pool``), per-install OS locks (``slotlock``) and the
operator's view of them (``status``)."""
