'use strict';
// What both nodes share: authenticated JSON requests to the deployment.

const base = (credentials) => String(credentials.baseUrl || '').replace(/\/+$/, '');

/** An authenticated JSON request to `path` on the deployment. */
const request = async (ctx, { path, ...options }) => {
  const credentials = await ctx.getCredentials('dingbridgeApi');
  return ctx.helpers.httpRequestWithAuthentication.call(ctx, 'dingbridgeApi', {
    json: true,
    ...options,
    url: `${base(credentials)}${path}`,
  });
};

module.exports = { request };
