-- One half of the swap ({old} and {new} identifiers); both halves run in one transaction.
ALTER DATABASE {old} RENAME TO {new};
