from tests.mosquitto_fixtures import fresh_mosquitto, mosquitto  # noqa: F401  (fixtures by name)
from tests.pki_fixtures import dev_pki, fresh_pki, rogue_pki  # noqa: F401  (fixtures by name)
