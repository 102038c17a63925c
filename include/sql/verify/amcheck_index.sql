-- Structural check of one B-tree index (heapallindexed: each heap tuple must be found in it);
-- corruption raises an error (SQLSTATE XX001/XX002).
SELECT bt_index_check(index => %(index_oid)s::oid::regclass, heapallindexed => true);
