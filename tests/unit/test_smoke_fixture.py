def test_lifecycle_fixture_has_a_champion(lifecycle_env):
    from include.mlops.config import get_settings
    from include.mlops.constants import CHAMPION
    from include.mlops.registry import alias_version, setup_mlflow

    client = setup_mlflow(get_settings())
    assert alias_version(client, lifecycle_env["spec"].model_name, CHAMPION) == lifecycle_env["register"].version
