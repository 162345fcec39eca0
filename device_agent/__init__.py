"""device_agent: reads BLE personal health devices through bleak, seals readings with the device
credential, hands envelopes to the gateway. Also hosts the virtual PHDs (bumble) used in tests
and the demo. bleak is imported only in its adapter module, bumble only in the virtual-device
modules."""
