// n8n's rules for community packages on what the package ships (package.json and dist/,
// plain JavaScript shipped as written): the rules n8n's own scanner
// (@n8n/scan-community-package) applies, plus eslint-plugin-n8n-nodes-base's community,
// credential and node rulesets. Tests and scripts are not shipped, so not held to them.
import { n8nCommunityNodesPlugin } from '@n8n/eslint-plugin-community-nodes';
import n8nNodesBase from 'eslint-plugin-n8n-nodes-base';
import tsParser from '@typescript-eslint/parser';

const shipped = ['package.json', 'index.js', 'dist/**/*.js'];

export default [
  { ignores: ['node_modules/**', 'test/**', 'scripts/**', 'eslint.config.mjs'] },
  ...[n8nCommunityNodesPlugin.configs.recommended].flat().map((c) => ({ ...c, files: shipped })),
  { files: shipped, rules: { 'no-console': 'error' } },
  { plugins: { 'n8n-nodes-base': n8nNodesBase } },
  { files: ['package.json'], languageOptions: { parser: tsParser }, rules: { ...n8nNodesBase.configs.community.rules } },
  {
    files: ['dist/credentials/**/*.js'],
    rules: {
      ...n8nNodesBase.configs.credentials.rules,
      // As in n8n's scanner: not valid for community nodes / covered by credential-password-field.
      'n8n-nodes-base/cred-class-field-documentation-url-miscased': 'off',
      'n8n-nodes-base/cred-class-field-type-options-password-missing': 'off',
    },
  },
  {
    files: ['dist/nodes/**/*.js'],
    rules: {
      ...n8nNodesBase.configs.nodes.rules,
      // As in n8n's scanner.
      'n8n-nodes-base/node-class-description-inputs-wrong-regular-node': 'off',
      'n8n-nodes-base/node-class-description-outputs-wrong': 'off',
      'n8n-nodes-base/node-param-type-options-max-value-present': 'off',
      // It asks for `<Name>.node.ts`; this package ships its JavaScript as written (n8n
      // loads the `.node.js` files package.json lists), so the file is rightly `.js`.
      'n8n-nodes-base/node-filename-against-convention': 'off',
    },
  },
];
