'use strict';
// The deployment's URL and an API key, sent as a bearer token on every request.

class DingbridgeApi {
  name = 'dingbridgeApi';
  displayName = 'dingbridge API';
  documentationUrl = 'https://github.com/dingbridge/dingbridge#use-it-from-n8n';
  properties = [
    {
      displayName: 'Base URL',
      name: 'baseUrl',
      type: 'string',
      default: '',
      placeholder: 'https://bridge.example.com',
      required: true,
    },
    {
      displayName: 'API Key',
      name: 'apiKey',
      type: 'string',
      typeOptions: { password: true },
      default: '',
      description: 'A dbk_… key with the scopes triggers and actions',
      required: true,
    },
  ];
  authenticate = {
    type: 'generic',
    properties: { headers: { Authorization: '=Bearer {{$credentials.apiKey}}' } },
  };
  test = {
    request: { baseURL: '={{$credentials.baseUrl.replace(/\\/+$/, "")}}', url: '/v1/me' },
  };
}

module.exports = { DingbridgeApi };
