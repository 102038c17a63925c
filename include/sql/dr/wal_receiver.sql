-- The standby's WAL receiver: streaming or not, from where, and the primary's WAL end it last reported.
SELECT status,
       flushed_lsn::text                                                     AS flushed_lsn,
       latest_end_lsn::text                                                  AS latest_end_lsn,
       latest_end_time,
       last_msg_receipt_time,
       slot_name,
       sender_host,
       sender_port
FROM pg_stat_wal_receiver
