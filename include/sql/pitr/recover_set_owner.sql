-- The copy gets the owner the recovered database had (pg_restore restores the owners of its objects).
ALTER DATABASE {name} OWNER TO {owner};
