'use strict';
// n8n loads the files listed under "n8n" in package.json; this is for tests and tooling.
module.exports = {
  ...require('./dist/credentials/DingbridgeApi.credentials'),
  ...require('./dist/nodes/Dingbridge/Dingbridge.node'),
  ...require('./dist/nodes/DingbridgeTrigger/DingbridgeTrigger.node'),
};
