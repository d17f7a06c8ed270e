from tests.integration.catalog import login, make_product

__all__ = ["login", "make_product"]
