-- PostgreSQL: let go of our lease (only ours).
DELETE FROM callsync_leases WHERE lake_schema = {schema} AND holder = {holder}
