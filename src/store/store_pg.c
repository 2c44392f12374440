/* store_pg.c - the PostgreSQL backend (being written: refuses URLs). */
#include "store/store_int.h"

int store__pg_open(struct store *st, const char *url, const struct store_options *o,
                   struct err *err)
{
    (void)url;
    (void)o;
    return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: PostgreSQL stores are not supported yet",
                   st->name);
}
