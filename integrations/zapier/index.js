'use strict';
// The dingbridge app for Zapier (Zapier CLI, private): `npx zapier-platform push` from
// this folder. Every trigger is a REST hook on POST /v1/hooks with GET /v1/triggers/{event}
// for sample data; every action posts to POST /v1/actions/{action}, its fields read from
// the deployment's own OpenAPI document. This file exports the app definition only.

const { base, addApiKey, ownThrottling, handleErrors } = require('./lib/http');
const triggers = require('./lib/triggers');
const { creates, searches } = require('./lib/actions');
const pkg = require('./package.json');

/** The scopes every part of this app needs; a key without them fails at connect time. */
const NEEDED_SCOPES = ['triggers', 'actions'];

const authentication = {
  type: 'custom',
  fields: [
    {
      key: 'baseUrl',
      label: 'dingbridge URL',
      required: true,
      type: 'string',
      helpText: "Where your dingbridge runs, e.g. `https://bridge.example.com`.",
    },
    {
      key: 'apiKey',
      label: 'API Key',
      required: true,
      type: 'password',
      helpText:
        'A `dbk_…` key made with `dingbridge keys create --name zapier --scopes triggers,actions`.',
    },
  ],
  test: async (z, bundle) => {
    const me = (await z.request({ url: `${base(bundle)}/v1/me` })).data;
    const scopes = (me && me.scopes) || [];
    const missing = NEEDED_SCOPES.filter((s) => !scopes.includes(s));
    if (missing.length) {
      throw new z.errors.Error(
        `The API key "${me.name}" lacks the scope${missing.length > 1 ? 's' : ''} ${missing.join(' and ')}; ` +
          'create a key with `dingbridge keys create --name zapier --scopes triggers,actions`.',
        'missing_scopes',
        403,
      );
    }
    return { ...me, host: new URL(base(bundle)).host };
  },
  // The key's name and the deployment it reaches, e.g. "zapier @ bridge.example.com".
  connectionLabel: '{{bundle.inputData.name}} @ {{bundle.inputData.host}}',
};

const byKey = (list) => Object.fromEntries(list.map((x) => [x.key, x]));

module.exports = {
  version: pkg.version,
  platformVersion: require('zapier-platform-core').version,
  authentication,
  beforeRequest: [addApiKey, ownThrottling],
  afterResponse: [handleErrors],
  triggers: byKey([...triggers.hooks, ...triggers.options]),
  creates: byKey(creates),
  searches: byKey(searches),
};
